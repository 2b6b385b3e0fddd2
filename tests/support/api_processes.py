"""Real `stockroom serve` processes for e2e tests, and users made through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.services import free_port

STOCKROOM = Path(sys.executable).with_name("stockroom")


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """A `stockroom serve` on a free port with `env`, until the block ends; its base URL."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(STOCKROOM), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=20)


def cli_token(env: dict[str, str], email: str) -> str:
    """A new user's first token, from `stockroom users create`."""
    created = subprocess.run(
        [str(STOCKROOM), "users", "create", "--email", email, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
        timeout=60,
    )
    token: str = json.loads(created.stdout)["token"]
    return token


async def is_up(http: httpx.AsyncClient, base: str) -> bool:
    try:
        return (await http.get(f"{base}/health")).status_code == 200
    except httpx.TransportError:
        return False

"""Real `stockroom serve` processes for e2e tests, and users made through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.support.redis_server import require_redis, unique_prefix
from tests.support.services import REDIS_URL, free_port

STOCKROOM = Path(sys.executable).with_name("stockroom")


@contextmanager
def two_instances(
    postgres_url: str, tmp_path: Path, **extra: str
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Two `stockroom serve` on one PostgreSQL and one Redis (a key prefix of their own), as
    behind a load balancer: (first base URL, second base URL, their environment)."""
    require_redis()
    env = {
        "STOCKROOM_ENVIRONMENT": "test",
        "STOCKROOM_DATABASE_URL": postgres_url,
        "STOCKROOM_CACHE_URL": REDIS_URL,
        "STOCKROOM_CACHE_KEY_PREFIX": unique_prefix(),
        # A loaded CI machine can stall a Redis reply past the 0.25 s default; a timed-out
        # invalidation is the outage case (tested elsewhere), not what these tests are about.
        "STOCKROOM_CACHE_SOCKET_TIMEOUT_SECONDS": "2",
        "STOCKROOM_STORAGE_URL": f"file://{tmp_path / 'media'}",
        "STOCKROOM_LOG_LEVEL": "WARNING",
        **extra,
    }
    with ExitStack() as stack:
        first = stack.enter_context(serving(env, tmp_path / "a.log"))
        second = stack.enter_context(serving(env, tmp_path / "b.log"))
        yield first, second, env


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

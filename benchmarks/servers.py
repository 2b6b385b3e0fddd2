"""Starting the server under test as a subprocess: the environment every section shares,
waiting for /health, and always stopping it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from benchmarks import seed as seeding


class ServerError(RuntimeError):
    """The server under test did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def production_env(**overrides: str) -> dict[str, str]:
    """The process environment plus production settings on the benchmark database."""
    env = dict(os.environ)
    env.update(
        STOCKROOM_DATABASE_URL=seeding.BENCH_URL,
        STOCKROOM_ENVIRONMENT="production",
        STOCKROOM_LOG_LEVEL="WARNING",
        STOCKROOM_WEBHOOK_SECRET="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        # One user writes thousands of times a second here: the limiter still counts every
        # write (its cost is in the figures) but never refuses one.
        STOCKROOM_RATE_LIMIT_WRITES_PER_MINUTE="1000000000",
    )
    env.update(overrides)  # a section's own database, broker... in place of the defaults
    return env


@contextlib.asynccontextmanager
async def serving(
    command: list[str], env: dict[str, str], log_path: Path, port: int, cwd: Path | None = None
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `command` (a server on `port`) until the block ends; yield its base URL."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base_url, process, log_path)
        yield base_url, process
    finally:
        stop(process, timeout=15)


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_healthy(
    base_url: str, process: subprocess.Popen[bytes], log: Path, path: str = "/health"
) -> None:
    """Until `path` answers 200; ServerError if the process exits first or 60 s pass."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerError(f"the server exited early; see {log}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(path)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise ServerError(f"the server did not answer {path} within 60 s; see {log}")

"""The HTTP client of the pipeline and jobs load: aiohttp, one session per simulated client.

The clients run on the machine they measure, so every millisecond of CPU they spend is taken
from the system under test. httpx, which the tests use, spends several times aiohttp's CPU
per request (a pure-Python HTTP parser; and each new client loads the CA bundle into an SSL
context, even for plain http://): side by side, `python -m benchmarks.load_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from benchmarks.servers import free_port, wait_healthy


@dataclass(frozen=True, slots=True)
class Reply:
    status_code: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class LoadClient:
    """A keep-alive client of `base_url`, with a token: authorised as that user. Create it on
    the event loop that uses it (aiohttp's rule)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 60,
        keep_alive: bool = True,
    ) -> None:
        self._session = aiohttp.ClientSession(
            base_url=base_url,
            connector=aiohttp.TCPConnector(force_close=not keep_alive),
            headers={"Authorization": f"Bearer {token}"} if token else None,
            timeout=aiohttp.ClientTimeout(total=timeout),
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )

    async def post_json(self, path: str, body: Any) -> Reply:
        async with self._session.post(path, json=body) as response:
            return Reply(response.status, await response.read(), response.content_type)

    async def get(self, path: str) -> Reply:
        async with self._session.get(path) as response:
            return Reply(response.status, await response.read(), response.content_type)

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, headers: dict[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response read as it comes (`async for line in response.content`), no time limit."""
        timeout = aiohttp.ClientTimeout(total=None)
        async with self._session.get(path, headers=headers, timeout=timeout) as response:
            yield response

    async def aclose(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _cpu_ms_per_call(calls: int, work: Callable[[], Coroutine[Any, Any, None]]) -> float:
    started = time.process_time()
    asyncio.run(work())
    return (time.process_time() - started) / calls * 1000


def compare(requests: int = 2000) -> dict[str, float]:
    """CPU ms per GET of a small file from a local origin, httpx against this client; and
    per new client."""
    with tempfile.TemporaryDirectory() as folder:
        files, log = Path(folder, "files"), Path(folder, "origin.log")
        files.mkdir()
        (files / "small.json").write_bytes(b'{"id": "x"}')
        port = free_port()
        command = [sys.executable, "-m", "benchmarks.origin", str(port), str(files)]
        with log.open("wb") as out:
            origin = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(wait_healthy(url, origin, log, path="/small.json"))
            return _compare(url, requests)
        finally:
            origin.terminate()
            origin.wait(10)


def _compare(url: str, requests: int) -> dict[str, float]:
    async def with_httpx() -> None:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(requests):
                (await client.get("/small.json")).raise_for_status()

    async def with_load_client() -> None:
        async with LoadClient(url) as client:
            for _ in range(requests):
                assert (await client.get("/small.json")).status_code == 200

    async def new_httpx() -> None:
        for _ in range(20):
            await httpx.AsyncClient().aclose()

    async def new_load_client() -> None:
        for _ in range(20):
            await LoadClient(url).aclose()

    return {
        "httpx, per request": _cpu_ms_per_call(requests, with_httpx),
        "LoadClient (aiohttp), per request": _cpu_ms_per_call(requests, with_load_client),
        "httpx, per new client": _cpu_ms_per_call(20, new_httpx),
        "LoadClient (aiohttp), per new client": _cpu_ms_per_call(20, new_load_client),
    }


if __name__ == "__main__":
    for name, ms in compare().items():
        print(f"{name}: {ms:.3f} ms of CPU")

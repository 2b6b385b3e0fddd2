"""The worker's download client, side by side: CPU per guarded download of a corpus photo.

`ImageFetcher` (aiohttp, pipeline/fetch.py) against the same guarded download through httpx:
`GuardedTransport` (the webhooks' guard, pipeline/guarded_transport.py) under an
`httpx.AsyncClient` with the fetcher's settings, the body read raw through `read_capped`:
what `ImageFetcher` was before it moved to aiohttp. Two origins (`benchmarks/origin.py`):
one that closes every connection (HTTP/1.0 image hosts; the pipeline's 1-image shape) and
one that keeps them alive. Rounds alternate the clients; the medians are printed.

    python -m benchmarks.download_client [ROUNDS]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.corpus import load_or_build
from benchmarks.servers import free_port, wait_healthy
from stockroom.pipeline.address_policy import AddressPolicy
from stockroom.pipeline.capped_body import read_capped
from stockroom.pipeline.fetch import ImageFetcher
from stockroom.pipeline.guarded_transport import GuardedTransport

DOWNLOADS = 150  # per client, origin and round
FILES = 40  # corpus photos cycled through, each at a URL never asked before
MAX_BYTES = 50_000_000
POLICY = AddressPolicy(allow_private=True)


class _HttpxFetcher:
    """The guarded download on httpx, as `ImageFetcher` made it before aiohttp."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(POLICY),
            trust_env=False,
            follow_redirects=False,
            timeout=30,
            headers={"Accept-Encoding": "identity", "User-Agent": "bench"},
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )

    async def fetch(self, url: str) -> bytes:
        async with asyncio.timeout(30), self._client.stream("GET", url) as response:
            response.raise_for_status()
            encoding = response.headers.get("content-encoding")
            return await read_capped(response.aiter_raw(), encoding, MAX_BYTES)

    async def aclose(self) -> None:
        await self._client.aclose()


class _AiohttpFetcher:
    def __init__(self) -> None:
        self._fetcher = ImageFetcher(POLICY, max_bytes=MAX_BYTES, timeout=30, max_redirects=3)

    async def fetch(self, url: str) -> bytes:
        return (await self._fetcher.fetch(url)).data

    async def aclose(self) -> None:
        await self._fetcher.aclose()


CLIENTS: dict[str, type[_HttpxFetcher | _AiohttpFetcher]] = {
    "httpx (GuardedTransport)": _HttpxFetcher,
    "aiohttp (ImageFetcher)": _AiohttpFetcher,
}


async def _cpu_ms_per_download(client: str, base: str, names: list[str], round_: int) -> float:
    fetcher = CLIENTS[client]()
    try:
        await fetcher.fetch(f"{base}/{names[0]}?warm-{round_}")
        started = time.process_time()
        for index in range(DOWNLOADS):
            url = f"{base}/{names[index % len(names)]}?{client[:5]}-{round_}-{index}"
            if len(await fetcher.fetch(url)) < 1000:
                raise RuntimeError(f"{url} came back short")
        return (time.process_time() - started) / DOWNLOADS * 1000
    finally:
        await fetcher.aclose()


def compare(rounds: int = 5) -> list[list[str]]:
    corpus = load_or_build()
    names = list(corpus.images[:FILES])
    origins: dict[str, subprocess.Popen[bytes]] = {}
    bases: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder, "origin.log")
        try:
            with log.open("ab") as out:
                for shape, keep in (("closing", "0"), ("keep-alive", "1")):
                    port = free_port()
                    origins[shape] = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "benchmarks.origin",
                            str(port),
                            str(corpus.directory),
                        ],
                        env={**os.environ, "BENCH_ORIGIN_KEEPALIVE": keep},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                    bases[shape] = f"http://127.0.0.1:{port}"
            for shape, base in bases.items():
                asyncio.run(wait_healthy(base, origins[shape], log, path=f"/{names[0]}"))
            samples: dict[tuple[str, str], list[float]] = {}
            for round_ in range(rounds):
                for shape, base in bases.items():
                    for client in CLIENTS:
                        ms = asyncio.run(_cpu_ms_per_download(client, base, names, round_))
                        samples.setdefault((shape, client), []).append(ms)
        finally:
            for origin in origins.values():
                origin.terminate()
                origin.wait(10)
    rows = []
    for shape in bases:
        httpx_ms, aiohttp_ms = (statistics.median(samples[shape, client]) for client in CLIENTS)
        for client in CLIENTS:
            values = samples[shape, client]
            rows.append([
                shape, client, f"{statistics.median(values):.2f}",
                ", ".join(f"{value:.2f}" for value in values),
            ])  # fmt: skip
        rows.append([shape, "aiohttp / httpx", f"{aiohttp_ms / httpx_ms:.2f}", ""])
    return rows


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    table = Table(
        title=f"CPU ms per guarded download of a corpus photo, {DOWNLOADS} per client, origin"
        f" and round, {rounds} rounds"
    )
    for column in ("origin", "client", "median", "rounds"):
        table.add_column(column, justify="left" if column in ("origin", "client") else "right")
    for row in compare(rounds):
        table.add_row(*row)
    Console(width=110).print(table)


if __name__ == "__main__":
    main()

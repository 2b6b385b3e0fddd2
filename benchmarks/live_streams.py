"""(b) of the `live` section: idle GET /events streams on one API process: the memory each
costs it, and the cached GET /products/{id} under wrk with and without them open.

The streams are raw asyncio connections from this process (one task each reads and drops
the pings), each as a different user, so each is a channel subscription of its own; the
server's `stockroom_sse_streams_open` gauge (GET /metrics) confirms they are all open.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from benchmarks.load import LoadResult, Wrk
from benchmarks.rss import status_kb

OPEN_CONCURRENCY = 50
RETRIES = 50
PROBE = 32  # new connections tried with the streams open
RETRY_SECONDS = 0.2
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
_OPEN_GAUGE = re.compile(rb"^stockroom_sse_streams_open(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


class StreamsError(RuntimeError):
    pass


class _Unavailable(Exception):
    """A 503 (live status unavailable, Retry-After): the client tries again."""


def raise_open_files_limit(wanted: int) -> int:
    """The soft RLIMIT_NOFILE raised towards `wanted` (capped by the hard limit); processes
    started afterwards inherit it. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


@dataclass(slots=True)
class IdleStreams:
    """Open streams by token: the connection and the task reading it."""

    by_token: dict[str, tuple[asyncio.StreamWriter, asyncio.Task[None]]] = field(
        default_factory=dict
    )
    seconds_to_open: float = 0.0
    ended_at_once: int = 0  # streams the server ended right after their 200 (opened again)
    refused: int = 0  # 503 answers (tried again)

    def ended(self) -> list[str]:
        """Forget the streams the server has ended; their tokens."""
        gone = [token for token, (_, task) in self.by_token.items() if task.done()]
        for token in gone:
            writer, _ = self.by_token.pop(token)
            writer.close()
        return gone

    async def close(self) -> None:
        opened, self.by_token = list(self.by_token.values()), {}
        for writer, task in opened:
            task.cancel()
            writer.close()
        for writer, _ in opened:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await asyncio.gather(*(task for _, task in opened), return_exceptions=True)


async def _read_until_ended(reader: asyncio.StreamReader) -> None:
    """Read and drop the pings until the stream ends: the connection closes, or the last
    chunk of the body arrives (the connection itself is kept alive)."""
    tail = b""
    with contextlib.suppress(OSError):
        while data := await reader.read(4096):
            tail = (tail + data)[-7:]
            if tail == b"\r\n0\r\n\r\n":
                return


async def _open_one(host: str, port: int, token: str, into: IdleStreams) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")  # sent once the subscription is confirmed
    except BaseException:
        writer.close()
        raise
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        if head.startswith(b"HTTP/1.1 503"):
            raise _Unavailable
        raise StreamsError(f"GET /events: {head.splitlines()[0].decode(errors='replace')}")
    into.by_token[token] = (writer, asyncio.create_task(_read_until_ended(reader)))


async def open_streams(base_url: str, tokens: list[str]) -> IdleStreams:
    """One stream per token, `OPEN_CONCURRENCY` being opened at a time; a 503, or a stream
    the server ends at once, is counted and opened again."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    streams = IdleStreams()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    started = time.perf_counter()

    async def one(token: str) -> None:
        for _ in range(RETRIES):
            try:
                async with gate, asyncio.timeout(30):
                    await _open_one(host, port, token, streams)
                    return
            except _Unavailable:
                streams.refused += 1
                await asyncio.sleep(RETRY_SECONDS)  # sooner than Retry-After: a benchmark
        raise StreamsError(f"GET /events: 503 {RETRIES} times in a row")

    pending = tokens
    try:
        for _ in range(5):
            await asyncio.gather(*(one(token) for token in pending))
            await asyncio.sleep(0.5)
            pending = streams.ended()
            if not pending:
                break
            streams.ended_at_once += len(pending)
        else:
            raise StreamsError(f"{len(pending)} streams still ended at once after 5 tries")
    except BaseException:
        await streams.close()
        raise
    streams.seconds_to_open = time.perf_counter() - started
    return streams


async def streams_open(base_url: str) -> float:
    """The server's own count of open streams."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get("/metrics")
    found = _OPEN_GAUGE.search(response.content)
    if response.status_code != 200 or found is None:
        raise StreamsError(f"GET /metrics: {response.status_code}, no open-streams gauge")
    return float(found.group(1))


async def wait_streams_open(base_url: str, expected: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (count := await streams_open(base_url)) != expected:
        if time.monotonic() > deadline:
            raise StreamsError(f"{count:.0f} streams open on the server, {expected} expected")
        await asyncio.sleep(0.2)


def tree_rss_kb(pids: list[int]) -> int:
    return sum(status_kb(pid, "VmRSS") for pid in pids)


async def authenticate(base_url: str, tokens: list[str]) -> None:
    """GET /me with each token: the token caches hold them all, as in a server that has
    been up a while, so the streams' memory is not the caches'."""
    gate = asyncio.Semaphore(20)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:

        async def me(token: str) -> None:
            async with gate:
                response = await http.get("/me", headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 200:
                raise StreamsError(f"GET /me: {response.status_code}")

        await asyncio.gather(*(me(token) for token in tokens))


async def _health_on_new_connection(host: str, port: int, timeout: float
                                    ) -> tuple[asyncio.StreamWriter, bool]:  # fmt: skip
    """One GET /health on a connection of its own, left open; answered within `timeout`?"""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
    try:
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            length = _CONTENT_LENGTH.search(head)
            await reader.readexactly(int(length.group(1)) if length else 0)
    except TimeoutError:
        return writer, False
    return writer, head.startswith(b"HTTP/1.1 200")


@contextlib.asynccontextmanager
async def held_connections(base_url: str, count: int, timeout: float
                           ) -> AsyncIterator[list[bool]]:  # fmt: skip
    """`count` keep-alive connections, one GET /health each, all held open until the block
    ends; yields whether each was answered within `timeout`."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> tuple[asyncio.StreamWriter, bool]:
        async with gate:
            return await _health_on_new_connection(host, port, timeout)

    opened = await asyncio.gather(*(one() for _ in range(count)))
    try:
        yield [answered for _, answered in opened]
    finally:
        for writer, _ in opened:
            writer.close()


async def keepalive_kb(base_url: str, server_pids: Callable[[], list[int]], count: int
                       ) -> tuple[int, int]:  # fmt: skip
    """RSS (before, with `count` idle keep-alive connections open), KB: the anchor of a
    stream's memory."""
    async with held_connections(base_url, 20, timeout=10):
        pass  # the first use of the path
    await asyncio.sleep(1)
    before = tree_rss_kb(server_pids())
    async with held_connections(base_url, count, timeout=30) as answered:
        if not all(answered):
            raise StreamsError(f"{answered.count(False)} idle connections were not answered")
        await asyncio.sleep(1)
        return before, tree_rss_kb(server_pids())


@dataclass(slots=True)
class StreamsRun:
    """Alternate windows of the same wrk row, without then with the streams open."""

    without: list[LoadResult] = field(default_factory=list)
    with_streams: list[LoadResult] = field(default_factory=list)
    rss_kb: list[tuple[int, int]] = field(default_factory=list)  # (before, after) each open
    seconds_to_open: list[float] = field(default_factory=list)
    ended_at_once: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    probe_answered: int | None = None  # new connections served with the streams open


async def measure(
    wrk: Wrk,
    base_url: str,
    server_pids: Callable[[], list[int]],
    *,
    token: str,
    stream_tokens: list[str],
    ids: tuple[int, int],
    rounds: int,
    seconds: float,
    warmup: float,
    connections: int,
) -> StreamsRun:
    """`rounds` x (wrk without streams, open them all, wrk with them, close them)."""
    run = StreamsRun()
    args = (str(ids[0]), str(ids[1]), "1")

    async def load() -> LoadResult:
        path = f"/products/{ids[0]}"  # wrk's script picks the ids
        return await wrk.run(path, "ids", args, token=token, connections=connections,
                             seconds=seconds, warmup_seconds=warmup)  # fmt: skip

    # First use of the stream path (imports, pools, lazily built objects): not per stream.
    await authenticate(base_url, stream_tokens)
    warm = await open_streams(base_url, stream_tokens[:20])
    await warm.close()
    await wait_streams_open(base_url, 0)
    for _ in range(rounds):
        run.without.append(await load())
        await asyncio.sleep(1)
        before = tree_rss_kb(server_pids())
        streams = await open_streams(base_url, stream_tokens)
        try:
            await wait_streams_open(base_url, len(stream_tokens))
            await asyncio.sleep(1)
            run.rss_kb.append((before, tree_rss_kb(server_pids())))
            run.seconds_to_open.append(streams.seconds_to_open)
            run.ended_at_once.append(streams.ended_at_once)
            run.refused.append(streams.refused)
            run.with_streams.append(await load())
            await wait_streams_open(base_url, len(stream_tokens), timeout=0)  # none dropped
            if run.probe_answered is None:
                async with held_connections(base_url, PROBE, timeout=3) as answered:
                    run.probe_answered = sum(answered)
        finally:
            await streams.close()
        await wait_streams_open(base_url, 0)
    return run

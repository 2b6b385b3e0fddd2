"""(a) of the `live` section: how long a committed job result takes to reach an SSE client
of another API instance, against a bare Redis PUBLISH -> SUBSCRIBE on the same machine.

Each window runs `benchmarks/live_publisher.py` in a process of its own (the worker's place)
at a fixed rate; this process listens (an httpx stream of GET /events on instance B, and a
redis-py subscriber) and notes each arrival on the same monotonic clock as the publisher's
stamps. Windows alternate (bare, jobs, bare, jobs, ...), so both see the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from benchmarks import ROOT
from benchmarks.load import CpuWatch
from benchmarks.system import percentile

KINDS = ("bare", "jobs")


class LatencyError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class LatencyWindow:
    kind: str  # bare: Redis PUBLISH -> SUBSCRIBE; jobs: commit -> SSE event on instance B
    latencies_ms: list[float]
    sent: int
    lost: int  # stamped, never arrived
    late_ms: float  # the publisher's worst delay behind its schedule
    cpu: dict[str, float]

    def summary(self) -> dict[str, Any]:
        values = self.latencies_ms
        return {
            "kind": self.kind,
            "sent": self.sent,
            "lost": self.lost,
            "p50_ms": round(percentile(values, 0.5), 2) if values else None,
            "p99_ms": round(percentile(values, 0.99), 2) if values else None,
            "max_ms": round(max(values), 2) if values else None,
            "publisher_late_ms": self.late_ms,
            "cpu_percent_of_one_core": self.cpu,
        }


@dataclass(frozen=True, slots=True)
class Pooled:
    """One kind's windows together: the table's figures."""

    kind: str
    rate: float
    p50_ms: float
    p99_ms: float
    sent: int
    lost: int
    cpu: dict[str, float]


def pool(windows: list[LatencyWindow], kind: str, rate: float) -> Pooled:
    mine = [w for w in windows if w.kind == kind]
    values = [v for w in mine for v in w.latencies_ms]
    if not values:
        raise LatencyError(f"no {kind} event arrived")
    keys = {key for w in mine for key in w.cpu}
    cpu = {key: round(statistics.mean(w.cpu.get(key, 0.0) for w in mine), 1) for key in keys}
    return Pooled(
        kind,
        rate,
        round(percentile(values, 0.5), 2),
        round(percentile(values, 0.99), 2),
        sum(w.sent for w in mine),
        sum(w.lost for w in mine),
        cpu,
    )


async def _sse(http: httpx.AsyncClient, url: str, token: str, arrivals: dict[str, float],
               connected: asyncio.Event) -> None:  # fmt: skip
    """Each `succeeded` job event of the stream: its arrival time, by job id."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    async with http.stream("GET", url, headers=headers, timeout=None) as response:
        if response.status_code != 200:
            raise LatencyError(f"GET /events: {response.status_code}")
        connected.set()  # the response starts once the subscription is confirmed
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrived = time.monotonic()
                data = json.loads(line[6:])
                if data.get("status") == "succeeded":
                    arrivals[data["id"]] = arrived


async def _redis(url: str, channel: str, arrivals: dict[str, float],
                 connected: asyncio.Event) -> None:  # fmt: skip
    client = Redis.from_url(url)
    try:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(channel)
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    connected.set()
                elif message["type"] == "message":
                    arrivals[message["data"].decode()] = time.monotonic()
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def listening(
    events_url: str, token: str, redis_url: str, channel: str
) -> AsyncIterator[dict[str, float]]:
    """Both listeners connected until the block ends; yields their arrivals by id."""
    arrivals: dict[str, float] = {}
    sse_up, redis_up = asyncio.Event(), asyncio.Event()
    http = httpx.AsyncClient()
    tasks = [
        asyncio.create_task(_sse(http, events_url, token, arrivals, sse_up)),
        asyncio.create_task(_redis(redis_url, channel, arrivals, redis_up)),
    ]
    try:
        async with asyncio.timeout(30):
            while not (sse_up.is_set() and redis_up.is_set()):
                for task in tasks:
                    if task.done():
                        raise LatencyError("a listener failed") from task.exception()
                await asyncio.sleep(0.05)
        yield arrivals
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await http.aclose()


async def window(
    kind: str,
    *,
    count: int,
    warm: int,
    rate: float,
    env: dict[str, str],
    arrivals: dict[str, float],
    groups: dict[str, Callable[[], list[int]]],
    log: Path,
) -> LatencyWindow:
    """One publisher run: `warm` events unmeasured, then `count` at `rate` per second."""
    with log.open("ab") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.live_publisher", kind, str(count), str(warm),
            str(rate), env=env, cwd=ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=err, limit=1 << 24,
        )  # fmt: skip
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        ready = await asyncio.wait_for(process.stdout.readline(), timeout=120)
        if ready.strip() != b"ready":
            raise LatencyError(f"the {kind} publisher did not start; see {log}")
        watch = CpuWatch({**groups, "publisher": lambda: [process.pid]})
        watch.start()
        started = time.perf_counter()
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60 + 5 * count / rate)
        cpu = watch.stop(time.perf_counter() - started)  # before it exits: /proc still has it
        process.stdin.write(b"exit\n")  # it waits for this, so its CPU could be read
        await process.stdin.drain()
        if await process.wait() != 0 or not line:
            raise LatencyError(f"the {kind} publisher failed; see {log}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    reply = json.loads(line)
    stamps: dict[str, float] = reply["stamps"]
    deadline = time.monotonic() + 5
    while any(key not in arrivals for key in stamps) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    latencies = [(arrivals.pop(key) - at) * 1000 for key, at in stamps.items() if key in arrivals]
    return LatencyWindow(
        kind, latencies, len(stamps), len(stamps) - len(latencies), reply["late_ms"], cpu
    )

"""(c) of the `live` section: webhook deliveries per second through the worker's sender
(`stockroom.pipeline.webhooks.WebhookSender`: signed, through the guarded session) against
a bare `aiohttp.ClientSession` posting the same body, at the same concurrency, to the same local
receiver (`benchmarks/live_receiver.py`, its own process). Windows alternate (bare, sender,
bare, sender, ...); each client is made once and warmed up, as a worker's sender lives long.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from benchmarks import ROOT
from benchmarks.load import CpuWatch
from benchmarks.servers import ServerError, free_port, stop
from benchmarks.system import percentile
from stockroom.domain.models import ImageJob, JobKind, JobStatus
from stockroom.domain.views import job_view
from stockroom.domain.webhooks import build_payload
from stockroom.pipeline.address_policy import AddressPolicy
from stockroom.pipeline.webhooks import USER_AGENT, WebhookSender

KINDS = ("bare", "sender")
WARM_DELIVERIES = 100


@dataclass(frozen=True, slots=True)
class Deliveries:
    kind: str
    count: int
    seconds: float
    latencies_ms: list[float]
    failures: int
    cpu: dict[str, float]


@dataclass(frozen=True, slots=True)
class PooledDeliveries:
    kind: str
    per_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    cpu: dict[str, float]


def pool(windows: list[Deliveries], kind: str) -> PooledDeliveries:
    mine = [w for w in windows if w.kind == kind]
    values = [v for w in mine for v in w.latencies_ms]
    keys = {key for w in mine for key in w.cpu}
    return PooledDeliveries(
        kind,
        sum(w.count for w in mine) / sum(w.seconds for w in mine),
        round(percentile(values, 0.5), 2),
        round(percentile(values, 0.99), 2),
        sum(w.failures for w in mine),
        {key: round(statistics.mean(w.cpu.get(key, 0.0) for w in mine), 1) for key in keys},
    )


def webhook_body() -> bytes:
    """A `job.succeeded` body as the worker builds it for a finished job."""
    now = datetime.now(UTC)
    job = ImageJob(
        id=uuid.uuid4().hex,
        user_id=1,
        kind=JobKind.STANDALONE,
        status=JobStatus.SUCCEEDED,
        queue="jobs",
        operations=[{"op": "resize", "width": 800, "height": 800}],
        created_at=now,
        source_url="https://images.example.com/photos/live-bench.jpg",
        attempts=1,
        output_key="jobs/live-bench.jpg",
        output_url="https://cdn.example.com/jobs/live-bench.jpg",
        width=800,
        height=600,
        bytes_in=412_345,
        bytes_out=81_234,
        started_at=now,
        finished_at=now,
    )
    return build_payload("job.succeeded", job_view(job), now)


@contextlib.asynccontextmanager
async def receiver(log: Path) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """The receiver process until the block ends; yields its URL."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.live_receiver", str(port)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ServerError(f"the webhook receiver did not start; see {log}") from None
                await asyncio.sleep(0.1)
            else:
                writer.close()
                break
        yield f"http://127.0.0.1:{port}/hooks/stockroom", process
    finally:
        stop(process, timeout=10)


async def _drive(count: int, concurrency: int, one: Callable[[int], Awaitable[bool]]
                 ) -> tuple[float, list[float], int]:  # fmt: skip
    """`count` calls of `one`, `concurrency` at a time: (seconds, latencies ms, failures)."""
    numbers = iter(range(count))
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for number in numbers:
            sent = time.perf_counter()
            ok = await one(number)
            latencies.append((time.perf_counter() - sent) * 1000)
            failures += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, failures


async def measure(
    url: str, groups: dict[str, Callable[[], list[int]]], *, rounds: int, count: int,
    concurrency: int,
) -> list[Deliveries]:  # fmt: skip
    body = webhook_body()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    sender = WebhookSender(AddressPolicy(allow_private=True), secret=secret)
    bare = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10),
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    prefix = f"msg_{uuid.uuid4().hex[:16]}"

    async def by_sender(number: int) -> bool:
        result = await sender.send(url, f"{prefix}{number:012d}", body)
        return result.outcome == "delivered"

    async def by_bare(number: int) -> bool:
        async with bare.post(url, data=body) as response:
            await response.read()
            return response.status == 200

    ways = {"bare": by_bare, "sender": by_sender}
    windows: list[Deliveries] = []
    try:
        for one in ways.values():
            await _drive(WARM_DELIVERIES, concurrency, one)
        for _ in range(rounds):
            for kind, one in ways.items():
                watch = CpuWatch(groups)
                watch.start()
                seconds, latencies, failures = await _drive(count, concurrency, one)
                cpu = watch.stop(seconds)
                windows.append(Deliveries(kind, count, seconds, latencies, failures, cpu))
    finally:
        await sender.aclose()
        await bare.close()
    return windows

"""The event source of the `live` section's latency rows, run as a process of its own (as a
worker is): events at a fixed rate, open loop, each stamped with `time.monotonic()` (one
clock for every process of the machine), so the section can time its arrival elsewhere.

    python -m benchmarks.live_publisher jobs|bare COUNT WARM RATE

`jobs`: standalone jobs of user `BENCH_LIVE_USER_ID`, added as `processing`, then each marked
succeeded through the transitions `bootstrap` builds for a worker (`AsyncpgJobTransitions.
succeed`: one statement in autocommit, then the effects); the stamp is taken when the effects
are called, i.e. just after the commit returned, before the job is read back and published.
`bare`: one redis-py PUBLISH per event on `BENCH_LIVE_CHANNEL`, stamped just before it.

Settings come from the STOCKROOM_* environment, as `stockroom worker` reads them. Prints
`ready` once warmed up (WARM events, not stamped), then one JSON line
`{"stamps": {id: t}, "late_ms": ...}`, then exits at the next line (or end) of its stdin.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import uvloop

from stockroom.bootstrap import Role, bootstrap
from stockroom.config import Settings
from stockroom.db.job_transitions import AsyncpgJobTransitions
from stockroom.domain.events import DomainEvent, JobChanged
from stockroom.domain.models import ImageJob, ImageResult, JobKind, JobStatus
from stockroom.services import Services

Act = Callable[[str], Coroutine[Any, Any, None]]


async def paced(keys: list[str], rate: float, act: Act) -> float:
    """`act` on each key at `rate` per second, never waiting for one to finish (open loop);
    returns how late the latest start was, in ms."""
    loop = asyncio.get_running_loop()
    start, late = loop.time(), 0.0
    tasks: list[asyncio.Task[None]] = []
    for index, key in enumerate(keys):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        tasks.append(loop.create_task(act(key)))
    await asyncio.gather(*tasks)
    return late * 1000


async def add_jobs(services: Services, user_id: int, count: int) -> list[str]:
    """`count` standalone jobs in `processing`, through the repository, one transaction."""
    now = datetime.now(UTC)
    jobs = [
        ImageJob(
            id=uuid.uuid4().hex,
            user_id=user_id,
            kind=JobKind.STANDALONE,
            status=JobStatus.PROCESSING,
            queue="jobs",
            operations=[],
            created_at=now,
            source_url="https://images.example.com/live-bench.jpg",
            attempts=1,
            started_at=now,
        )
        for _ in range(count)
    ]
    async with services.uow() as uow:
        for job in jobs:
            await uow.image_jobs.add(job)
        await uow.commit()
    return [job.id for job in jobs]


async def jobs_mode(
    count: int, warm: int, rate: float, stamps: dict[str, float]
) -> tuple[list[str], float]:
    services = await bootstrap(Settings(), Role.CLI)
    # The worker's own transitions and effects, as bootstrap wired them (one asyncpg pool
    # for the statement and the effects' reads); only the effects get a stopwatch in front.
    transitions = services.transitions
    if not isinstance(transitions, AsyncpgJobTransitions) or transitions._effects is None:
        raise RuntimeError("the jobs mode needs PostgreSQL (the worker's one-statement path)")
    effects = transitions._effects

    async def timed(events: Sequence[DomainEvent]) -> None:
        now = time.monotonic()
        for event in events:
            if isinstance(event, JobChanged):
                stamps[event.job_id] = now
        await effects(events)

    transitions._effects = timed

    async def succeed(job_id: str) -> None:
        result = ImageResult(
            output_key=f"jobs/{job_id}.jpg",
            output_url=f"https://cdn.example.com/jobs/{job_id}.jpg",
            width=800,
            height=600,
            bytes_in=412_345,
            bytes_out=81_234,
        )
        written, _ = await transitions.succeed(job_id, None, result)
        if not written:
            raise RuntimeError(f"job {job_id} was not in processing")

    try:
        ids = await add_jobs(services, int(os.environ["BENCH_LIVE_USER_ID"]), warm + count)
        return await _run(ids[:warm], ids[warm:], rate, succeed)
    finally:
        await services.aclose()


async def bare_mode(
    count: int, warm: int, rate: float, stamps: dict[str, float]
) -> tuple[list[str], float]:
    from redis.asyncio import Redis

    client = Redis.from_url(os.environ["STOCKROOM_CACHE_URL"])
    channel = os.environ["BENCH_LIVE_CHANNEL"]

    async def publish(key: str) -> None:
        stamps[key] = time.monotonic()
        await client.publish(channel, key)

    try:
        ids = [uuid.uuid4().hex for _ in range(warm + count)]
        return await _run(ids[:warm], ids[warm:], rate, publish)
    finally:
        await client.aclose()


async def _run(
    warm: list[str], measured: list[str], rate: float, act: Act
) -> tuple[list[str], float]:
    await paced(warm, rate, act)
    print("ready", flush=True)
    return measured, await paced(measured, rate, act)


def main(argv: list[str]) -> int:
    mode, count, warm, rate = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    run = {"jobs": jobs_mode, "bare": bare_mode}[mode]
    stamps: dict[str, float] = {}
    # The worker's loop is uvloop (stockroom/worker.py): the same here, in both modes.
    measured, late_ms = uvloop.run(run(count, warm, rate, stamps))
    stamped = {key: stamps[key] for key in measured if key in stamps}
    out = {"stamps": stamped, "late_ms": round(late_ms, 2)}
    print(json.dumps(out), flush=True)
    sys.stdin.readline()  # the section reads this process's CPU time first
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Driving POST /jobs: bursts of jobs from concurrent clients, each waiting for its jobs to
end on a GET /events stream (or polling each, BENCH_JOBS_WAIT=poll), and one job watched for
the workers' memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from benchmarks.bare import Shape
from benchmarks.load import CpuWatch
from benchmarks.load_client import LoadClient
from benchmarks.rss import RssSampler, status_kb
from benchmarks.system import PipelineError, System, worker_log_times

# The clients' poll interval: each GET costs the API CPU the workers need; the latency is
# read from the job's `finished_at`, so a slower poll does not lengthen it.
POLL_S = float(os.environ.get("BENCH_JOBS_POLL_MS", "100")) / 1000
# How a client learns that its jobs ended: `events`, one GET /events stream per client (what
# the contract offers a client waiting for many jobs), or `poll`, GET /jobs/{id} in turn.
WAIT = os.environ.get("BENCH_JOBS_WAIT", "events")
DONE = ("succeeded", "failed")


@dataclass(slots=True)
class Burst:
    shape: Shape
    jobs: int
    seconds: float  # first POST sent -> the last job's finished_at
    submit_seconds: float  # first POST sent -> the last POST answered
    latencies_ms: list[float]  # POST sent -> finished_at, succeeded jobs
    statuses: Counter[str]
    error_codes: Counter[str]
    bytes_out: int
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # the CPU window: first POST -> the last job seen done
    job_ms: dict[str, float] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def succeeded(self) -> int:
        return self.statuses["succeeded"]


def _timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


async def _wait_done(http: LoadClient, job_id: str, deadline: float) -> dict[str, Any]:
    while True:
        response = await http.get(f"/jobs/{job_id}")
        if response.status_code != 200:
            raise PipelineError(f"GET /jobs/{job_id}: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        if body["status"] in DONE:
            return body
        if time.monotonic() > deadline:
            raise PipelineError(f"job {job_id} still {body['status']} at the deadline")
        await asyncio.sleep(POLL_S)


# A job's `data:` line holds `"status":"succeeded"` (orjson, no spaces) once it has ended:
# only those are parsed, as a client waiting for results would.
_ENDED = tuple(f'"status":"{status}"'.encode() for status in DONE)


def _ended(line: bytes) -> bool:
    return any(status in line for status in _ENDED)


class _Ended:
    """The jobs a GET /events stream has seen end, by id (the stream's `event: job` data is
    the job as GET /jobs/{id} returns it). Reconnects with Last-Event-ID if cut."""

    def __init__(self, http: LoadClient) -> None:
        self._http = http
        self.jobs: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.connected = asyncio.Event()
        self._last_id: str | None = None
        self.failure: BaseException | None = None

    async def follow(self) -> None:
        try:
            await self._follow()
        except Exception as exc:  # the waiter raises it, rather than waiting for the deadline
            self.failure = exc
            self.connected.set()
            self.changed.set()

    async def _follow(self) -> None:
        while True:
            headers = {"Accept": "text/event-stream"}
            if self._last_id is not None:
                headers["Last-Event-ID"] = self._last_id
            async with self._http.stream("/events", headers) as response:
                if response.status != 200:
                    raise PipelineError(f"GET /events: {response.status}")
                self.connected.set()  # the response starts once the subscription is confirmed
                kind = b""
                async for line in response.content:
                    if line.startswith(b"id: "):
                        self._last_id = line[4:].decode().strip()
                    elif line.startswith(b"event: "):
                        kind = line[7:].strip()
                    elif kind == b"job" and line.startswith(b"data: ") and _ended(line):
                        job = orjson.loads(line[6:])
                        self.jobs[job["id"]] = job
                        self.changed.set()

    async def wait(self, job_ids: list[str], deadline: float) -> list[dict[str, Any]]:
        while not all(job_id in self.jobs for job_id in job_ids):
            if self.failure is not None:
                raise PipelineError(f"the events stream failed: {self.failure!r}")
            self.changed.clear()
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                missing = [i for i in job_ids if i not in self.jobs]
                raise PipelineError(f"{len(missing)} jobs not ended at the deadline")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout)
        return [self.jobs[job_id] for job_id in job_ids]


class _Client:
    """One simulated client: its own connections and, with WAIT=events, its own stream,
    opened (and the subscription confirmed) before the burst starts."""

    def __init__(self, system: System, user: int) -> None:
        self.system = system
        self.http = system.client(user)
        self.ended = _Ended(self.http)
        self._follower: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if WAIT == "events":
            self._follower = asyncio.create_task(self.ended.follow())
            await asyncio.wait_for(self.ended.connected.wait(), 30)
            if self.ended.failure is not None:
                raise PipelineError(f"GET /events failed: {self.ended.failure!r}")

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self.http.aclose()

    async def run(
        self, names: list[str], shape: Shape, deadline: float
    ) -> tuple[list[dict[str, Any]], float]:
        """Submit every name, then wait until each job ends; (jobs, last answer)."""
        sent = []
        for name in names:
            at = time.time()
            job_id = await self.system.submit_job(name, shape.operations_json(), http=self.http)
            sent.append((job_id, at))
        submitted = time.time()
        if self._follower is not None:
            bodies = await self.ended.wait([job_id for job_id, _ in sent], deadline)
        else:
            bodies = [await _wait_done(self.http, job_id, deadline) for job_id, _ in sent]
        done = [{**body, "sent": at} for body, (_, at) in zip(bodies, sent, strict=True)]
        return done, submitted


async def job_burst(system: System, names: list[str], shape: Shape, clients: int) -> Burst:
    """Every name as one job of `shape`, `clients` clients submitting at once. The window
    starts at the first POST: the clients' connections and streams are opened before it."""
    log_offset = system.logs["worker"].stat().st_size
    users = [_Client(system, index) for index in range(clients)]
    try:
        await asyncio.gather(*(user.open() for user in users))
        watch = CpuWatch(system.cpu_groups())
        watch.start()
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        results = await asyncio.gather(
            *(user.run(names[i::clients], shape, deadline) for i, user in enumerate(users))
        )
        cpu_seconds = time.perf_counter() - started
        cpu = watch.stop(cpu_seconds)
    finally:
        await asyncio.gather(*(user.close() for user in users))
    jobs = [job for done, _ in results for job in done]
    first_post = min(job["sent"] for job in jobs)
    finished = [_timestamp(job["finished_at"]) or first_post for job in jobs]
    latencies = [
        (end - job["sent"]) * 1000
        for job, end in zip(jobs, finished, strict=True)
        if job["status"] == "succeeded"
    ]
    await asyncio.sleep(0.2)  # the last `image.processed` line
    ids = {job["id"] for job in jobs}
    return Burst(
        shape=shape,
        jobs=len(jobs),
        seconds=max(finished) - first_post,
        submit_seconds=max(submitted for _, submitted in results) - first_post,
        latencies_ms=latencies,
        statuses=Counter(job["status"] for job in jobs),
        error_codes=Counter(job["error_code"] for job in jobs if job["error_code"]),
        bytes_out=sum(job["bytes_out"] or 0 for job in jobs),
        cpu=cpu,
        cpu_seconds=cpu_seconds,
        job_ms=worker_log_times(system.logs["worker"], log_offset, "job_id", ids),
    )


async def memory_job(system: System, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
    """One job of `operations` on the corpus file `name`, the workers' VmRSS sampled every
    20 ms meanwhile; its outcome, peak RSS and processing time."""
    children = system.worker_children()
    before = {pid: status_kb(pid, "VmRSS") for pid in children}
    sampler = RssSampler(system.worker_children)
    sampler.start()
    await asyncio.sleep(0.2)
    sent = time.time()
    job_id = await system.submit_job(name, operations)
    try:
        job = await _wait_done(system.http, job_id, time.monotonic() + 900)
    finally:
        await asyncio.sleep(0.2)
        sampler.stop()
    growth = {pid: sampler.peak_kb.get(pid, 0) - before.get(pid, 0) for pid in sampler.peak_kb}
    started, finished = _timestamp(job["started_at"]), _timestamp(job["finished_at"])
    processing_ms = (finished - started) * 1000 if started and finished else None
    megapixels = (job["width"] or 0) * (job["height"] or 0) / 1e6
    return {
        "status": job["status"],
        "error_code": job["error_code"],
        "error": job["error"],
        "attempts": job["attempts"],
        "peak_mb": sampler.peak_mb,
        "before_mb": round(max(before.values(), default=0) / 1024, 1),
        "busiest_growth_mb": round(max(growth.values(), default=0) / 1024, 1),
        "samples": sampler.samples,
        "submit_to_done_ms": round(((finished or time.time()) - sent) * 1000, 1),
        "processing_ms": round(processing_ms, 1) if processing_ms is not None else None,
        "output": f"{job['width']}x{job['height']}" if job["width"] else None,
        "output_megapixels": round(megapixels, 2),
        "bytes_out": job["bytes_out"],
        "processing_ms_per_output_megapixel": (
            round(processing_ms / megapixels, 1) if processing_ms and megapixels else None
        ),
    }

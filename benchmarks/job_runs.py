"""Driving POST /jobs: bursts of jobs from concurrent clients, each waiting for its jobs to
end on a GET /events stream (or polling each, BENCH_JOBS_WAIT=poll), and one job watched for
the workers' memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from benchmarks.bare import Shape
from benchmarks.load import CpuWatch
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


async def _wait_done(http: httpx.AsyncClient, job_id: str, deadline: float) -> dict[str, Any]:
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


class _Ended:
    """The jobs a GET /events stream has seen end, by id (the stream's `event: job` data is
    the job as GET /jobs/{id} returns it). Reconnects with Last-Event-ID if cut."""

    def __init__(self, http: httpx.AsyncClient) -> None:
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
            async with self._http.stream("GET", "/events", headers=headers, timeout=None) as r:
                if r.status_code != 200:
                    raise PipelineError(f"GET /events: {r.status_code}")
                self.connected.set()  # the response starts once the subscription is confirmed
                async for line in r.aiter_lines():
                    if line.startswith("id: "):
                        self._last_id = line[4:]
                    elif line.startswith("data: "):
                        job = json.loads(line[6:])
                        if job.get("status") in DONE and "operations" in job:
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


async def _client(
    system: System, names: list[str], shape: Shape, deadline: float
) -> tuple[list[dict[str, Any]], float]:
    """Submit every name, then wait until each job ends; (jobs, last answer)."""
    async with system.client() as http:
        ended = _Ended(http)
        follower = asyncio.create_task(ended.follow()) if WAIT == "events" else None
        try:
            if follower is not None:
                await asyncio.wait_for(ended.connected.wait(), 30)
                if ended.failure is not None:
                    raise PipelineError(f"GET /events failed: {ended.failure!r}")
            sent = []
            for name in names:
                at = time.time()
                job_id = await system.submit_job(name, shape.operations_json(), http=http)
                sent.append((job_id, at))
            submitted = time.time()
            if follower is not None:
                bodies = await ended.wait([job_id for job_id, _ in sent], deadline)
            else:
                bodies = [await _wait_done(http, job_id, deadline) for job_id, _ in sent]
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
    done = [{**body, "sent": at} for body, (_, at) in zip(bodies, sent, strict=True)]
    return done, submitted


async def job_burst(system: System, names: list[str], shape: Shape, clients: int) -> Burst:
    """Every name as one job of `shape`, `clients` clients submitting at once."""
    log_offset = system.logs["worker"].stat().st_size
    watch = CpuWatch(system.cpu_groups())
    watch.start()
    started_wall, started = time.time(), time.perf_counter()
    deadline = time.monotonic() + 600
    results = await asyncio.gather(
        *(_client(system, names[i::clients], shape, deadline) for i in range(clients))
    )
    cpu_seconds = time.perf_counter() - started
    cpu = watch.stop(cpu_seconds)
    jobs = [job for done, _ in results for job in done]
    finished = [_timestamp(job["finished_at"]) or started_wall for job in jobs]
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
        seconds=max(finished) - started_wall,
        submit_seconds=max(submitted for _, submitted in results) - started_wall,
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

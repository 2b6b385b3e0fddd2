"""Probes of the idle pipeline: one image at a time, POST -> ready with its stages (from
the job and outbox rows), and the workers' RSS while they process the 50 MP JPEG."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from benchmarks.corpus import Corpus
from benchmarks.rss import RssSampler, status_kb
from benchmarks.system import System


@dataclass(frozen=True, slots=True)
class Latency:
    name: str
    total_ms: float  # POST sent -> the image row is ready (row timestamp)
    post_ms: float  # the POST's response time
    stages_ms: dict[str, float]


async def one_image_latency(system: System, name: str) -> Latency:
    sent_wall, sent = time.time(), time.perf_counter()
    product_id = await system.post([name])
    post_ms = (time.perf_counter() - sent) * 1000
    ready_at = await system.wait_ready([product_id], 1, timeout=60, poll=0.005)
    job = await system.db.fetchrow(
        "SELECT j.created_at, o.published_at, j.started_at, j.finished_at"
        " FROM image_jobs j LEFT JOIN outbox o ON o.job_id = j.id"
        " WHERE j.product_id = $1",
        product_id,
    )
    sent_ts = sent_wall

    def since(ts: datetime | None, ref: float) -> float:
        return round((ts.timestamp() - ref) * 1000, 1) if ts is not None else float("nan")

    created = job["created_at"].timestamp()
    published = job["published_at"].timestamp() if job["published_at"] else created
    started = job["started_at"].timestamp() if job["started_at"] else published
    finished = job["finished_at"].timestamp() if job["finished_at"] else started
    stages = {
        "post->job row": since(job["created_at"], sent_ts),
        "job row->published": round((published - created) * 1000, 1),
        "published->started": round((started - published) * 1000, 1),
        "started->finished": round((finished - started) * 1000, 1),
        "finished->ready": since(ready_at, finished),
    }
    return Latency(name, (ready_at.timestamp() - sent_ts) * 1000, post_ms, stages)


async def big_image_rss(system: System, corpus: Corpus) -> dict[str, Any]:
    children = system.worker_children()
    before = {pid: status_kb(pid, "VmRSS") for pid in children}
    sampler = RssSampler(system.worker_children)
    sampler.start()
    await asyncio.sleep(0.2)
    sent = time.time()
    product_id = await system.post([corpus.big])
    ready_at = await system.wait_ready([product_id], 1, timeout=120)
    await asyncio.sleep(0.2)
    sampler.stop()
    job = await system.db.fetchrow(
        "SELECT started_at, finished_at, bytes_in, bytes_out, width, height FROM image_jobs"
        " WHERE product_id = $1",
        product_id,
    )
    growth = {pid: sampler.peak_kb.get(pid, 0) - before.get(pid, 0) for pid in sampler.peak_kb}
    busiest = max(growth, key=lambda pid: growth[pid])
    return {
        "peak_mb": sampler.peak_mb,
        "peak_mb_per_process": {pid: round(kb / 1024, 1) for pid, kb in sampler.peak_kb.items()},
        "before_mb_per_process": {pid: round(kb / 1024, 1) for pid, kb in before.items()},
        "busiest_pid": busiest,
        "busiest_growth_mb": round(growth[busiest] / 1024, 1),
        "hwm_mb_after": {pid: round(status_kb(pid, "VmHWM") / 1024, 1) for pid in children},
        "samples": sampler.samples,
        "post_to_ready_ms": round((ready_at.timestamp() - sent) * 1000, 1),
        "processing_ms": round(
            (job["finished_at"].timestamp() - job["started_at"].timestamp()) * 1000, 1
        ),
        "source": f"{corpus.big} ({job['bytes_in'] / 1e6:.1f} MB)",
        "output": f"{job['width']}x{job['height']} ({job['bytes_out'] / 1e3:.0f} kB)",
    }


def latency_sample(lat: Latency) -> dict[str, Any]:
    return {
        "image": lat.name,
        "total_ms": round(lat.total_ms, 1),
        "post_ms": round(lat.post_ms, 1),
        **lat.stages_ms,
    }

"""The standalone jobs benchmark (POST /jobs), beside the bare libvips loop and thumbor.

* Bursts: 100 corpus photos (30 with --quick), one job each, submitted at once by 4
  concurrent clients (each connects and subscribes first, POSTs its share, then waits for
  its jobs on a GET /events stream, or polls each, BENCH_JOBS_WAIT=poll), in two shapes:
  `resize` 800x800 and no operations (the default pipeline: fit 2048, q50).
  jobs/s = jobs / (first POST -> last `finished_at`); latency = POST sent -> `finished_at`.
* Bare: the same files through the naive, same-options and process() loops of
  benchmarks/bare.py, 2 processes; bare windows and bursts alternate (bare, bursts, bare,
  ...; BENCH_JOBS_ROUNDS rounds, 3 by default) and each burst is divided by the mean of the
  same-options windows on either side of it; the ratio is the median.
* thumbor 7.8.0 (benchmarks/thumbor.py): the same transforms (fit-in 800x800 and
  2048x2048, quality 50), 4 closed-loop clients (a connection per request), right after each
  Stockroom burst.
* Memory: one job `rotate 33, force_resize 6000x6000, convert avif` on the 50 MP JPEG with
  the workers' RSS sampled, as configured, then with the workers restarted with
  STOCKROOM_MAX_IMAGE_PIXELS=BENCH_JOBS_RAISED_MAX_PIXELS (default 120,000,000; 0 skips
  it); and the same recipe in bare libvips, its AVIF encode timed alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Any

from benchmarks import Options, SectionResult
from benchmarks.bare import DEFAULT_SHAPE, FIT_800, LOOPS, BarePool, BareResult, Shape, bare_avif
from benchmarks.benchvenv import ToolUnavailable
from benchmarks.corpus import Corpus, load_or_build
from benchmarks.job_runs import Burst, job_burst, memory_job
from benchmarks.jobs_report import JobsReport
from benchmarks.load import CpuWatch, busy_cores
from benchmarks.system import (
    WORKER_PROCESSES,
    System,
    prepare_database,
    rabbitmq_vhost,
    running_system,
    warm_up,
)
from benchmarks.thumbor import Thumbor, ThumborWindow, running_thumbor, thumbor_window

JOBS, QUICK_JOBS = 100, 30
CLIENTS = 4
ROUNDS = int(os.environ.get("BENCH_JOBS_ROUNDS", "3"))
RAISED_PIXELS = int(os.environ.get("BENCH_JOBS_RAISED_MAX_PIXELS", "120000000"))
MEMORY_OPS: list[dict[str, Any]] = [
    {"op": "rotate", "degrees": 33},
    {"op": "force_resize", "width": 6000, "height": 6000},
    {"op": "convert", "format": "avif"},
]
SHAPES = (FIT_800, DEFAULT_SHAPE)
Window = dict[tuple[str, str], BareResult]  # (loop, shape name) -> result


def _log(text: str) -> None:
    print(f"[jobs] {text}", file=sys.stderr)


def spread(items: tuple[str, ...], count: int) -> list[str]:
    """`count` items evenly over `items` (the corpus runs from small to large)."""
    if count >= len(items):
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


async def bare_window(pool: BarePool) -> Window:
    window: Window = {}
    for shape in SHAPES:
        for loop in LOOPS:
            window[loop, shape.name] = await asyncio.to_thread(pool.run, loop, shape, 1)
    return window


async def _thumbor_round(
    thumbor: Thumbor, shape: Shape, names: list[str], system: System
) -> ThumborWindow:
    groups = {"thumbor": thumbor.pids, "workers": system.cpu_groups()["workers"]}
    return await thumbor_window(thumbor, shape, names, CLIENTS, CpuWatch(groups))


async def _warm(system: System, corpus: Corpus, thumbor: Thumbor | None, names: list[str]) -> None:
    """Both worker processes busy once per shape; thumbor's processes too."""
    await warm_up(system, corpus)
    for shape in SHAPES:
        await job_burst(system, names[:4], shape, CLIENTS)
        if thumbor is not None:
            await _thumbor_round(thumbor, shape, names[:8], system)


class JobsBenchmark:
    name = "jobs"
    title = "Standalone jobs: POST /jobs bursts vs a bare libvips loop and thumbor"

    async def run(self, options: Options) -> SectionResult:
        corpus = await asyncio.to_thread(load_or_build)
        names = spread(corpus.images, QUICK_JOBS if options.quick else JOBS)
        paths = [corpus.path(name) for name in names]
        rounds = 1 if options.quick else ROUNDS
        report = JobsReport(self.name, self.title, len(names), CLIENTS)
        report.result.meta["cpu_busy_before"] = background = await busy_cores()
        _log(f"{len(names)} photos; machine busy {background:.0f} % of a core before starting")
        # A user per client, as four independent clients are: each events stream carries
        # its own jobs' events, not every client's.
        tokens = await prepare_database(users=CLIENTS)
        windows: list[Window] = []
        bursts: dict[str, list[Burst]] = {shape.name: [] for shape in SHAPES}
        thumbs: dict[str, list[ThumborWindow]] = {shape.name: [] for shape in SHAPES}
        with rabbitmq_vhost():
            async with running_system(corpus, tokens, "jobs") as system:
                async with contextlib.AsyncExitStack() as stack:
                    thumbor: Thumbor | None = None
                    try:
                        _log(f"starting thumbor ({WORKER_PROCESSES} processes)...")
                        thumbor = await stack.enter_async_context(running_thumbor(corpus))
                    except ToolUnavailable as exc:
                        report.thumbor_missing = str(exc)
                        _log(f"no thumbor: {exc}")
                    _log("warming up...")
                    await _warm(system, corpus, thumbor, names)
                    with BarePool(paths, WORKER_PROCESSES) as pool:
                        for shape in SHAPES:
                            report.recipe_bytes[shape.name] = await asyncio.to_thread(
                                pool.recipe_as_process, shape
                            )
                        _log("bare window (naive, same-options, recipe, process(); both shapes)...")
                        windows.append(await bare_window(pool))
                        for index in range(rounds):
                            for shape in SHAPES:
                                _log(f"round {index + 1}/{rounds}: {shape.name}, Stockroom...")
                                bursts[shape.name].append(
                                    await job_burst(system, names, shape, CLIENTS)
                                )
                                if thumbor is not None:
                                    _log(f"round {index + 1}/{rounds}: {shape.name}, thumbor...")
                                    thumbs[shape.name].append(
                                        await _thumbor_round(thumbor, shape, names, system)
                                    )
                            _log("bare window...")
                            windows.append(await bare_window(pool))
                _log("memory: rotate 33, force_resize 6000x6000, avif on the 50 MP JPEG...")
                report.memory["configured"] = await memory_job(system, corpus.big, MEMORY_OPS)
                if RAISED_PIXELS:
                    _log(f"memory again, STOCKROOM_MAX_IMAGE_PIXELS={RAISED_PIXELS}...")
                    await system.restart_worker(STOCKROOM_MAX_IMAGE_PIXELS=str(RAISED_PIXELS))
                    report.memory["raised"] = await memory_job(system, corpus.big, MEMORY_OPS)
                    report.memory["raised"]["max_image_pixels"] = RAISED_PIXELS
        _log("bare libvips: the same recipe, AVIF encode timed alone...")
        report.memory["bare"] = await asyncio.to_thread(
            bare_avif, corpus.path(corpus.big), 33, 6000
        )
        report.add(SHAPES, windows, bursts, thumbs)
        return report.result

"""The image pipeline benchmark: end-to-end throughput of the real services (benchmarks/
system.py) against the bare libvips loop (benchmarks/bare.py) over the same corpus, in the
same run.

* Bare: the corpus bytes through `thumbnail_buffer` fit in 2048x2048 (the default pipeline's
  shape), JPEG q50, in 1 and 2 processes with one libvips thread each, images/s and output
  bytes: the naive loop (plain `jpegsave_buffer`), the same-options loop (Stockroom's save
  options: the anchor) and `process()` itself.
* End to end, two shapes, each POSTing the corpus as many times as the bare loop runs it
  (every URL unique, so every image is downloaded and processed again: the workers'
  `image.processed` events are counted to prove it); images/s is N / (first POST to the
  last image row turning `ready`), read from the rows' timestamps:
  - 10 images per product, one client, from an origin that keeps connections alive;
  - 1 image per product, 8 concurrent clients, from an origin that closes every
    connection (HTTP/1.0 style).
* Side by side: the speed of a shared VM drifts within minutes, so same-options bare
  windows and end-to-end windows alternate (bare, e2e 10, bare, e2e 1, bare, ...;
  BENCH_PIPELINE_PAIRS of each shape, 5 by default) and each e2e window is divided by the
  mean of the bare windows on either side of it; the ratio reported is the median.
* Profile (BENCH_PROFILE=1, the default): one more 1-image-per-product window, not
  measured, with py-spy sampling the workers; summarised per thread in the notes.
* Latency: on the otherwise idle system, 20 single-image products, one at a time, each
  waited for (polling its row every 5 ms): POST -> ready, broken down with the job's and
  the outbox row's timestamps.
* Memory: the worker processes' RSS sampled every 20 ms while one 50 MP JPEG is processed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from benchmarks import RESULTS_DIR, Options, Row, SectionResult
from benchmarks.bare import DEFAULT_SHAPE, LOOPS, BarePool, BareResult
from benchmarks.benchvenv import ToolUnavailable
from benchmarks.corpus import load_or_build
from benchmarks.load import CpuWatch, busy_cores, cpu_note
from benchmarks.load_client import LoadClient
from benchmarks.probes import Latency, big_image_rss, latency_sample, one_image_latency
from benchmarks.profiling import py_spy, summarise, summary_text, thread_cpu
from benchmarks.system import (
    SERVICES,
    WORKER_PROCESSES,
    PipelineError,
    System,
    cpu_ms_per_image,
    percentile,
    prepare_database,
    rabbitmq_vhost,
    running_system,
    warm_up,
    worker_log_times,
)

LATENCY_SAMPLES = 20
TARGET_RATIO = 0.8
TARGET_BYTES = 0.92  # Stockroom's output bytes / the naive loop's
PAIRS = int(os.environ.get("BENCH_PIPELINE_PAIRS", "5"))
T = TypeVar("T")
PROFILE = os.environ.get("BENCH_PROFILE", "1") != "0"
TARGET_P50_MS = 300.0
TARGET_RSS_MB = 400.0


@dataclass(frozen=True, slots=True)
class ProductShape:
    """How the corpus is POSTed: images per product, concurrent clients, which origin."""

    name: str
    per_product: int
    clients: int
    closing: bool  # the origin closes every connection


PER_10 = ProductShape("10 images/product, 1 client, keep-alive origin", 10, 1, False)
PER_1 = ProductShape("1 image/product, 8 clients, origin closes connections", 1, 8, True)
PRODUCT_SHAPES = (PER_10, PER_1)


@dataclass(frozen=True, slots=True)
class EndToEnd:
    shape: ProductShape
    images: int
    seconds: float
    post_seconds: float
    bytes_out: int
    cpu: dict[str, float]
    cpu_seconds: float  # the CPU window
    job_ms: dict[str, float]  # medians from the worker log: fetch, whole job
    processed: int  # `image.processed` events in the window: one per image, none skipped

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


async def _post_all(
    system: System, batches: list[list[str]], shape: ProductShape, http: LoadClient
) -> list[int]:
    return [await system.post(batch, closing=shape.closing, http=http) for batch in batches]


async def end_to_end(system: System, names: list[str], shape: ProductShape) -> EndToEnd:
    step = shape.per_product
    batches = [names[i : i + step] for i in range(0, len(names), step)]
    shares = [batches[i :: shape.clients] for i in range(shape.clients)]
    clients = [system.http] if shape.clients == 1 else [system.client() for _ in shares]
    log_offset = system.logs["worker"].stat().st_size
    watch = CpuWatch(system.cpu_groups())
    watch.start()
    started_wall, started = time.time(), time.perf_counter()
    try:
        posted = await asyncio.gather(
            *(
                _post_all(system, share, shape, http)
                for share, http in zip(shares, clients, strict=True)
            )
        )
    finally:
        if shape.clients > 1:
            await asyncio.gather(*(http.aclose() for http in clients))
    post_seconds = time.perf_counter() - started
    product_ids = [product_id for ids in posted for product_id in ids]
    # The end is the last row's updated_at, not when the poll sees it: a slow poll costs the
    # measurement nothing, and a fast one costs the machine CPU the system under test needs.
    last = await system.wait_ready(product_ids, len(names), timeout=600, poll=0.1)
    cpu_seconds = time.perf_counter() - started
    cpu = watch.stop(cpu_seconds)
    await asyncio.sleep(0.2)  # the last `image.processed` line
    job_ms = worker_log_times(system.logs["worker"], log_offset, "product_id", set(product_ids))
    processed = int(job_ms.pop("image.processed_count", 0))
    if processed != len(names):
        raise PipelineError(f"{processed} images processed for {len(names)} posted")
    bytes_out = await system.db.fetchval(
        "SELECT sum(bytes_out) FROM image_jobs WHERE product_id = ANY($1)", product_ids
    )
    seconds = last.timestamp() - started_wall
    return EndToEnd(
        shape,
        len(names),
        seconds,
        post_seconds,
        int(bytes_out),
        cpu,
        cpu_seconds,
        job_ms,
        processed,
    )


def _cpu_note(cpu: dict[str, float]) -> str:
    keys = ("workers", "api", "postgres", "rabbitmq", "redis", "files", "bench")
    return cpu_note(cpu, {key: key for key in keys})


def median_by(items: list[T], key: Callable[[T], float]) -> T:
    return sorted(items, key=key)[len(items) // 2]


def _log(text: str) -> None:
    print(f"[pipeline] {text}", file=sys.stderr)


async def profile_window(system: System, names: list[str]) -> tuple[str, dict[str, Any]]:
    """One unmeasured 1-image-per-product window with py-spy on the workers, and each
    worker thread's CPU over it."""
    output = RESULTS_DIR / "profile-pipeline-worker.json"
    try:
        with py_spy(system.worker.pid, output):
            await asyncio.sleep(1)  # py-spy attaches
            before = thread_cpu(system.worker_children())
            e2e = await end_to_end(system, names, PER_1)
            after = thread_cpu(system.worker_children())
    except ToolUnavailable as exc:
        return f"no profile: {exc}", {"error": str(exc)}
    if not output.exists():
        return f"no profile: py-spy wrote nothing (see {output.with_suffix('.log')})", {}
    cpu = {tid: seconds - before.get(tid, 0.0) for tid, seconds in after.items()}
    roles = summarise(output, cpu)
    text = (
        f"{PER_1.name}, {e2e.images} images at {e2e.images_per_s:.1f} images/s (slowed by "
        f"sampling); whole job {e2e.job_ms.get('image.processed_median')} ms, fetch "
        f"{e2e.job_ms.get('image.fetched_median')} ms (medians); CPU from /proc, stacks "
        f"from py-spy ({output})\n" + summary_text(roles, e2e.images)
    )
    meta = {
        "file": str(output),
        "images": e2e.images,
        "worker_log_ms": e2e.job_ms,
        "roles": [
            {
                "name": role.name,
                "cpu_ms_per_image": round(role.cpu_s * 1000 / e2e.images, 2),
                "threads": role.threads,
                "busy_samples": role.busy_samples,
                "frames": role.frames.most_common(15),
                "on_top": role.leaves.most_common(10),
            }
            for role in roles
        ],
    }
    return text, meta


class PipelineBenchmark:
    name = "pipeline"
    title = "Image pipeline: 2 worker processes over RabbitMQ vs a bare libvips loop"

    async def run(self, options: Options) -> SectionResult:
        corpus = await asyncio.to_thread(load_or_build)
        names = list(corpus.images[::3] if options.quick else corpus.images)
        paths = [corpus.path(name) for name in names]
        rounds = 1 if options.quick else 2
        result = SectionResult(self.name, self.title)
        result.meta["corpus"] = {
            "origin": corpus.origin,
            "images": len(names),
            "megapixels": round(sum(corpus.sizes[n][0] * corpus.sizes[n][1] for n in names) / 1e6),
            "bytes": sum(p.stat().st_size for p in paths),
            "big": corpus.big,
        }
        result.meta["cpu_busy_before"] = background = await busy_cores()
        _log(
            f"corpus: {len(names)} images ({corpus.origin}); machine busy "
            f"{background:.0f} % of a core before starting"
        )
        _log("bare libvips, same-options loop, 1 process...")
        with BarePool(paths, 1) as pool1:
            bare1 = await asyncio.to_thread(pool1.run, "same", DEFAULT_SHAPE, rounds)
        tokens = await prepare_database()
        pairs = 1 if options.quick else PAIRS
        bares: list[BareResult] = []
        first: dict[str, BareResult] = {}
        e2es: dict[ProductShape, list[EndToEnd]] = {shape: [] for shape in PRODUCT_SHAPES}
        ratios: dict[ProductShape, list[float]] = {shape: [] for shape in PRODUCT_SHAPES}
        profile_text, profile_meta = "profile off (BENCH_PROFILE=0)", dict[str, Any]()
        with rabbitmq_vhost():
            async with running_system(corpus, tokens, "pipeline") as system:
                _log("warming up the workers and the bare pool...")
                await warm_up(system, corpus)
                with BarePool(paths, WORKER_PROCESSES) as pool:
                    recipe_bytes = await asyncio.to_thread(pool.recipe_as_process, DEFAULT_SHAPE)
                    for loop in LOOPS:
                        _log(f"bare, 2 processes, {loop} loop...")
                        first[loop] = await asyncio.to_thread(pool.run, loop, DEFAULT_SHAPE, rounds)
                    bares.append(first["same"])
                    for pair in range(pairs):
                        for shape in PRODUCT_SHAPES:
                            step = f"{pair + 1}/{pairs}, {shape.name}"
                            _log(f"end to end ({step}): {len(names)} images x {rounds}...")
                            e2e = await end_to_end(system, names * rounds, shape)
                            _log("bare, 2 processes, same-options loop...")
                            bare = await asyncio.to_thread(pool.run, "same", DEFAULT_SHAPE, rounds)
                            mean = statistics.mean([bares[-1].images_per_s, bare.images_per_s])
                            ratios[shape].append(e2e.images_per_s / mean)
                            e2es[shape].append(e2e)
                            bares.append(bare)
                if PROFILE:
                    _log("profiling the workers with py-spy (1 image per product)...")
                    profile_text, profile_meta = await profile_window(system, names)
                await asyncio.sleep(2)  # let the machine settle: the next rows are "idle"
                _log("one image at a time...")
                spread = [
                    names[round(i * (len(names) - 1) / (LATENCY_SAMPLES - 1))]
                    for i in range(LATENCY_SAMPLES)
                ]
                latencies = []
                for name in spread:
                    latencies.append(await one_image_latency(system, name))
                    await asyncio.sleep(0.3)
                _log("RSS while processing a 50 MP JPEG...")
                rss = await big_image_rss(system, corpus)
        result.meta["side_by_side"] = {
            "bare_2_processes_images_per_s": [round(b.images_per_s, 2) for b in bares],
            **{
                f"end_to_end {shape.name}": {
                    "images_per_s": [round(e.images_per_s, 2) for e in e2es[shape]],
                    "ratios": [round(r, 3) for r in ratios[shape]],
                }
                for shape in PRODUCT_SHAPES
            },
        }
        result.meta["recipe_bytes_equal_process"] = recipe_bytes
        result.meta["profile"] = profile_meta
        bare2 = median_by(bares, lambda b: b.images_per_s)
        first["same"] = bare2
        self._bare_rows(result, bare1, first)
        self._e2e_rows(result, e2es, ratios, bare2)
        self._other_rows(result, latencies, rss)
        self._notes(result, bare1, first, e2es, ratios, latencies, rss, recipe_bytes)
        result.notes.append(("Pipeline worker profile (py-spy)", profile_text))
        return result

    def _bare_rows(
        self, result: SectionResult, bare1: BareResult, bare2: dict[str, BareResult]
    ) -> None:
        anchor = bare2["same"]
        for bare in (bare1, *bare2.values()):
            result.rows.append(
                Row(
                    section=self.name,
                    name=f"bare, {LOOPS[bare.loop]}, {bare.processes} process(es) (images/s)",
                    requests_per_s=bare.images_per_s,
                    p50_ms=statistics.median(bare.per_image_ms),
                    p99_ms=percentile(bare.per_image_ms, 0.99),
                    ratio=bare.images_per_s / anchor.images_per_s,
                    note=f"{bare.bytes_per_image / 1000:.0f} kB/image; bare "
                    f"{bare.cpu.get('bare', 0):.0f} machine {bare.cpu.get('machine', 0):.0f}",
                    extra={
                        "images": bare.images,
                        "seconds": round(bare.seconds, 2),
                        "bytes_out": bare.bytes_out,
                    },
                )
            )

    def _e2e_rows(
        self,
        result: SectionResult,
        e2es: dict[ProductShape, list[EndToEnd]],
        ratios: dict[ProductShape, list[float]],
        bare2: BareResult,
    ) -> None:
        for shape in PRODUCT_SHAPES:
            e2e = median_by(e2es[shape], lambda e: e.images_per_s)
            result.rows.append(
                Row(
                    section=self.name,
                    name=f"end to end, {shape.name} (images/s)",
                    requests_per_s=e2e.images_per_s,
                    ratio=statistics.median(ratios[shape]),
                    note=f"{e2e.bytes_out / e2e.images / 1000:.0f} kB/image; " + _cpu_note(e2e.cpu),
                    extra={
                        "images": e2e.images,
                        "processed_events": e2e.processed,
                        "seconds": round(e2e.seconds, 2),
                        "post_seconds": round(e2e.post_seconds, 2),
                        "bytes_out": e2e.bytes_out,
                        "worker_log_ms": e2e.job_ms,
                        "cpu_percent_of_one_core": e2e.cpu,
                    },
                )
            )

    def _other_rows(
        self, result: SectionResult, latencies: list[Latency], rss: dict[str, Any]
    ) -> None:
        totals = [lat.total_ms for lat in latencies]
        p50, p95 = statistics.median(totals), percentile(totals, 0.95)
        stages = {
            stage: round(statistics.median(lat.stages_ms[stage] for lat in latencies), 1)
            for stage in latencies[0].stages_ms
        }
        result.rows.append(
            Row(
                section=self.name,
                name=f"one image, idle system, POST -> ready ({len(latencies)} images)",
                p50_ms=p50,
                p99_ms=max(totals),
                note=f"p95 {p95:.0f} ms; max in the p99 column",
                extra={
                    "p95_ms": p95,
                    "median_stage_ms": stages,
                    "samples": [latency_sample(lat) for lat in latencies],
                },
            )
        )
        result.rows.append(
            Row(
                section=self.name,
                name="worker RSS, one 50 MP JPEG (peak MB in the note)",
                p50_ms=rss["processing_ms"],
                note=f"peak {rss['peak_mb']:.0f} MB (busiest +{rss['busiest_growth_mb']:.0f} MB); "
                f"processing ms in p50",
                extra=rss,
            )
        )

    def _notes(
        self,
        result: SectionResult,
        bare1: BareResult,
        bare2: dict[str, BareResult],
        e2es: dict[ProductShape, list[EndToEnd]],
        ratios: dict[ProductShape, list[float]],
        latencies: list[Latency],
        rss: dict[str, Any],
        recipe_bytes: bool,
    ) -> None:
        anchor, naive = bare2["same"], bare2["naive"]
        lines = []
        targets: dict[str, Any] = {}
        for shape in PRODUCT_SHAPES:
            ratio = statistics.median(ratios[shape])
            e2e = median_by(e2es[shape], lambda e: e.images_per_s)
            met = ratio >= TARGET_RATIO
            lines.append(
                f"{shape.name}: end to end / same-options bare loop (2 processes), median of "
                f"{len(ratios[shape])} pairs: {ratio:.2f} (target >= {TARGET_RATIO}: "
                f"{'met' if met else f'NOT met, short by {TARGET_RATIO - ratio:.2f}'}); pairs "
                + ", ".join(f"{r:.2f}" for r in ratios[shape])
                + f"; median windows {e2e.images_per_s:.1f} / {anchor.images_per_s:.1f} images/s;"
                f" per job (worker log, medians): fetch {e2e.job_ms.get('image.fetched_median')}"
                f" ms, whole job {e2e.job_ms.get('image.processed_median')} ms"
            )
            workers = cpu_ms_per_image(e2e.cpu, e2e.cpu_seconds, e2e.images, "workers")
            services = cpu_ms_per_image(e2e.cpu, e2e.cpu_seconds, e2e.images, *SERVICES)
            bare_ms = cpu_ms_per_image(anchor.cpu, anchor.seconds, anchor.images, "bare")
            lines.append(
                f"  CPU per image: workers {workers:.1f} ms + API, PostgreSQL, RabbitMQ, Redis,"
                f" origin {services:.1f} ms; same-options bare loop {bare_ms:.1f} ms; bare / "
                f"Stockroom {bare_ms / (workers + services):.2f} (≈ the ratio on an idle machine)"
            )
            targets[shape.name] = {
                "ratio": round(ratio, 3),
                "ratio_met": met,
                "cpu_ms_per_image": {"workers": round(workers, 1), "services": round(services, 1)},
                "bare_cpu_ms_per_image": round(bare_ms, 1),
            }
        e2e10 = median_by(e2es[PER_10], lambda e: e.images_per_s)
        bytes_ratio = (e2e10.bytes_out / e2e10.images) / naive.bytes_per_image
        lines += [
            f"bare loops, 2 processes, images/s: naive {naive.images_per_s:.1f}, same-options "
            f"{anchor.images_per_s:.1f} (median window), process() "
            f"{bare2['process'].images_per_s:.1f}; same-options / 1 process: "
            f"{anchor.images_per_s / bare1.images_per_s:.2f}; recipe loop output identical to"
            f" process(): {'yes' if recipe_bytes else 'NO'}",
            f"output bytes per image: naive {naive.bytes_per_image / 1000:.1f} kB, "
            f"same-options {anchor.bytes_per_image / 1000:.1f} kB, Stockroom "
            f"{e2e10.bytes_out / e2e10.images / 1000:.1f} kB = {bytes_ratio:.3f} x naive "
            f"(target <= {TARGET_BYTES}: {'met' if bytes_ratio <= TARGET_BYTES else 'NOT met'})",
        ]
        totals = [lat.total_ms for lat in latencies]
        p50, p95 = statistics.median(totals), percentile(totals, 0.95)
        lines += [
            f"one image POST -> ready: p50 {p50:.0f} ms, p95 {p95:.0f} ms (target p50 <= "
            f"{TARGET_P50_MS:.0f} ms: {'met' if p50 <= TARGET_P50_MS else 'NOT met'})",
            f"worker RSS with a 50 MP JPEG: peak {rss['peak_mb']:.0f} MB (target < "
            f"{TARGET_RSS_MB:.0f} MB: {'met' if rss['peak_mb'] < TARGET_RSS_MB else 'NOT met'}); "
            f"processed in {rss['processing_ms']:.0f} ms, "
            f"POST -> ready {rss['post_to_ready_ms']:.0f} ms",
            f"CPU during end to end, {PER_10.name} (% of one core): {_cpu_note(e2e10.cpu)}",
            f"machine busy before starting: {result.meta.get('cpu_busy_before', 0):.0f} % of one"
            " core (ours: 0)",
        ]
        result.notes.append(("Pipeline ratios and targets", "\n".join(lines)))
        result.meta["targets"] = {
            **targets,
            "bytes_vs_naive": round(bytes_ratio, 3),
            "bytes_met": bytes_ratio <= TARGET_BYTES,
            "latency_p50_ms": round(p50, 1),
            "latency_p95_ms": round(p95, 1),
            "latency_met": p50 <= TARGET_P50_MS,
            "rss_peak_mb": rss["peak_mb"],
            "rss_met": rss["peak_mb"] < TARGET_RSS_MB,
        }

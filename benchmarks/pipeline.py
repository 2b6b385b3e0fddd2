"""The image pipeline benchmark: end-to-end throughput of the real services against a bare
libvips loop over the same corpus, in the same run.

* Bare: `stockroom.pipeline.operations.process(data, None, jpeg_quality=50,
  max_pixels=50_000_000)` over the corpus bytes in 1 and in 2 processes (multiprocessing,
  `VIPS_CONCURRENCY=1`), images/s.
* End to end: PostgreSQL (`stockroom_bench_pipeline`), RabbitMQ (a dedicated vhost,
  deleted afterwards), Redis db 15, file storage; `stockroom serve` (API + outbox relay)
  and `stockroom worker --processes 2` (its default threads) as subprocesses; the corpus
  served over HTTP on 127.0.0.1 by `benchmarks/origin.py`. The corpus is POSTed as many
  times as the bare loop runs it (products of 10 images, every URL unique, so every round
  is downloaded and processed again: the workers' `image.processed` events are counted to
  prove it), and images/s is
  N / (first POST to the last image row turning `ready`), read from the rows' timestamps.
* Side by side: the speed of a shared VM drifts within minutes, so the
  2-process bare window and the end-to-end window alternate (bare, e2e, bare, e2e, ...,
  bare; BENCH_PIPELINE_PAIRS e2e windows, 3 by default) and each e2e window is divided by
  the mean of the bare windows on either side of it; the ratio reported is the median.
* Latency: on the otherwise idle system, 20 single-image products, one at a time, each
  waited for (polling its row every 5 ms): POST -> ready, broken down with the job's and
  the outbox row's timestamps.
* Memory: the worker processes' RSS sampled every 20 ms while one 50 MP JPEG is processed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from benchmarks import RESULTS_DIR, Options, Row, SectionResult
from benchmarks.corpus import Corpus, load_or_build
from benchmarks.load import CpuWatch, busy_cores, cpu_note, pids_named, process_tree
from benchmarks.seed import recreate_database
from benchmarks.servers import free_port, stop, wait_healthy

DB_NAME = "stockroom_bench_pipeline"
DSN = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
DATABASE_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB_NAME}"
VHOST = "stockroom_bench"
BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
REDIS_URL = "redis://127.0.0.1:6379/15"  # db 15 only: db 0 belongs to others
MEDIA_DIR = RESULTS_DIR / "pipeline-media"
JPEG_QUALITY = 50
MAX_PIXELS = 50_000_000
WORKER_PROCESSES = 2
IMAGES_PER_PRODUCT = 10
LATENCY_SAMPLES = 20
TARGET_RATIO = 0.8
PAIRS = int(os.environ.get("BENCH_PIPELINE_PAIRS", "3"))
TARGET_P50_MS = 300.0
TARGET_RSS_MB = 400.0


class PipelineError(RuntimeError):
    pass


# --- bare libvips ---------------------------------------------------------------------------

_BARE_DATA: list[bytes] = []


def _bare_init(paths: list[str]) -> None:
    _BARE_DATA[:] = [Path(p).read_bytes() for p in paths]


def _bare_one(index: int) -> float:
    from stockroom.pipeline.operations import process

    started = time.perf_counter()
    process(_BARE_DATA[index], None, jpeg_quality=JPEG_QUALITY, max_pixels=MAX_PIXELS)
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class BareResult:
    processes: int
    images: int
    seconds: float
    per_image_ms: list[float]
    cpu: dict[str, float]

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def bare_throughput(paths: list[Path], processes: int, rounds: int) -> BareResult:
    """The corpus `rounds` times through `process` in a pool of `processes` processes."""
    # inherited by the spawned children
    os.environ["VIPS_CONCURRENCY"] = os.environ.get("BENCH_BARE_VIPS_CONCURRENCY", "1")
    context = multiprocessing.get_context("spawn")
    files = [str(p) for p in paths]
    with context.Pool(processes, initializer=_bare_init, initargs=(files,)) as pool:
        pool.map(_bare_one, [0, 1, 2, 3] * processes, chunksize=1)  # imports, first decodes
        jobs = list(range(len(paths))) * rounds
        watch = CpuWatch({"bare": lambda: process_tree(os.getpid())})
        watch.start()
        started = time.perf_counter()
        times = pool.map(_bare_one, jobs, chunksize=1)
        seconds = time.perf_counter() - started
        cpu = watch.stop(seconds)
    return BareResult(processes, len(jobs), seconds, [t * 1000 for t in times], cpu)


# --- the running system ---------------------------------------------------------------------


@dataclass(slots=True)
class System:
    api_url: str
    files_url: str
    token: str
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    files: subprocess.Popen[bytes]
    db: asyncpg.Connection
    http: httpx.AsyncClient
    posted: int = 0
    logs: dict[str, Path] = field(default_factory=dict)

    def cpu_groups(self) -> dict[str, Callable[[], list[int]]]:
        return {
            "api": lambda: process_tree(self.api.pid),
            "workers": lambda: process_tree(self.worker.pid),
            "postgres": lambda: pids_named("postgres"),
            "rabbitmq": lambda: pids_named("beam.smp"),
            "redis": lambda: pids_named("redis-server"),
            "files": lambda: [self.files.pid],
            "bench": lambda: [os.getpid()],
        }

    def worker_children(self) -> list[int]:
        return [pid for pid in process_tree(self.worker.pid) if pid != self.worker.pid]

    async def post(self, names: list[str]) -> int:
        """POST one product with these corpus images (unique URLs); returns its id."""
        self.posted += 1
        urls = [f"{self.files_url}/{name}?n={self.posted}.{i}" for i, name in enumerate(names)]
        body = {
            "product_name": f"Bench product {self.posted}",
            "product_price": "10.00",
            "product_images": urls,
        }
        response = await self.http.post("/products", json=body)
        if response.status_code != 201:
            raise PipelineError(f"POST /products: {response.status_code} {response.text[:500]}")
        product_id: int = response.json()["id"]
        return product_id

    async def wait_ready(
        self, product_ids: list[int], expected: int, timeout: float, poll: float = 0.02
    ) -> datetime:
        """Until every image of these products is ready; returns the last `updated_at`."""
        deadline = time.monotonic() + timeout
        while True:
            row = await self.db.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'ready') AS ready,"
                " count(*) FILTER (WHERE status = 'failed') AS failed,"
                " max(updated_at) AS last FROM product_images WHERE product_id = ANY($1)",
                product_ids,
            )
            if row["failed"]:
                errors = await self.db.fetch(
                    "SELECT source_url, error_code, error FROM product_images"
                    " WHERE product_id = ANY($1) AND status = 'failed' LIMIT 5",
                    product_ids,
                )
                raise PipelineError(f"{row['failed']} image(s) failed: {[dict(e) for e in errors]}")
            if row["ready"] >= expected:
                last: datetime = row["last"]
                return last
            if time.monotonic() > deadline:
                raise PipelineError(
                    f"only {row['ready']}/{expected} images ready after {timeout:.0f} s; "
                    f"see {self.logs}"
                )
            await asyncio.sleep(poll)


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", *args], check=check, capture_output=True, timeout=60)


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[None]:
    """A vhost of our own, so no other user's queue is touched; deleted on exit."""
    _rabbitmqctl("delete_vhost", VHOST, check=False)
    _rabbitmqctl("add_vhost", VHOST)
    try:
        _rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
        yield
    finally:
        _rabbitmqctl("delete_vhost", VHOST, check=False)


async def prepare_database() -> str:
    """Drop, create and migrate the pipeline database; one user with a token."""
    from stockroom.db.migrate import upgrade

    await recreate_database(DB_NAME)
    await asyncio.to_thread(upgrade, DATABASE_URL)
    token = "sr_" + secrets.token_urlsafe(32)
    conn = await asyncpg.connect(DSN)
    try:
        user_id = await conn.fetchval(
            "INSERT INTO users (email, name, is_admin, created_at)"
            " VALUES ('pipeline@bench.local', 'Pipeline bench', false, now()) RETURNING id"
        )
        await conn.execute(
            "INSERT INTO api_tokens (user_id, token_hash, name, created_at)"
            " VALUES ($1, $2, 'bench', now())",
            user_id,
            hashlib.sha256(token.encode()).hexdigest(),
        )
    finally:
        await conn.close()
    return token


def _flush_redis_db15() -> None:
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def running_system(corpus: Corpus, token: str) -> AsyncIterator[System]:
    bin_dir = Path(sys.executable).parent
    if MEDIA_DIR.exists():
        shutil.rmtree(MEDIA_DIR)
    MEDIA_DIR.mkdir(parents=True)
    await asyncio.to_thread(_flush_redis_db15)
    api_port, files_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        STOCKROOM_DATABASE_URL=DATABASE_URL,
        STOCKROOM_BROKER_URL=BROKER_URL,
        STOCKROOM_CACHE_URL=REDIS_URL,
        STOCKROOM_STORAGE_URL=f"file://{MEDIA_DIR.resolve()}",
        STOCKROOM_PUBLIC_BASE_URL=f"http://127.0.0.1:{api_port}",
        STOCKROOM_ALLOW_PRIVATE_NETWORKS="true",
        STOCKROOM_ENVIRONMENT="production",
        STOCKROOM_LOG_LEVEL="WARNING",
        STOCKROOM_WEBHOOK_SECRET="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        VIPS_CONCURRENCY=os.environ.get("BENCH_WORKER_VIPS_CONCURRENCY", "1"),
    )
    logs = {
        "files": RESULTS_DIR / "pipeline-files.log",
        "api": RESULTS_DIR / "pipeline-api.log",
        "worker": RESULTS_DIR / "pipeline-worker.log",
    }
    files = _start(
        [sys.executable, "-m", "benchmarks.origin", str(files_port), str(corpus.directory)],
        env, logs["files"],
    )  # fmt: skip
    api = _start(
        [str(bin_dir / "stockroom"), "serve", "--host", "127.0.0.1", "--port", str(api_port)],
        env,
        logs["api"],
    )
    # INFO for the workers only: their `image.fetched` / `image.processed` events (two JSON
    # lines per job) give the fetch and whole-job times behind the throughput.
    # Threads: the worker's default (STOCKROOM_WORKER_THREADS) unless BENCH_WORKER_THREADS.
    threads = os.environ.get("BENCH_WORKER_THREADS")
    worker = _start(
        [str(bin_dir / "stockroom"), "worker", "--processes", str(WORKER_PROCESSES),
         *(["--threads", threads] if threads else [])],
        {**env, "STOCKROOM_LOG_LEVEL": "INFO"}, logs["worker"],
    )  # fmt: skip
    db = await asyncpg.connect(DSN)
    api_url = f"http://127.0.0.1:{api_port}"
    http = httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    try:
        await wait_healthy(api_url, api, logs["api"])
        yield System(
            api_url=api_url,
            files_url=f"http://127.0.0.1:{files_port}",
            token=token,
            api=api,
            worker=worker,
            files=files,
            db=db,
            http=http,
            logs=logs,
        )
    finally:
        await http.aclose()
        await db.close()
        for process in (worker, api, files):
            stop(process, timeout=30)


# --- the measurements -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndToEnd:
    images: int
    seconds: float
    post_seconds: float
    cpu: dict[str, float]
    job_ms: dict[str, float]  # medians from the worker log: fetch, whole job
    processed: int  # `image.processed` events in the window: one per image, none skipped

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


async def end_to_end(system: System, names: list[str]) -> EndToEnd:
    batches = [names[i : i + IMAGES_PER_PRODUCT] for i in range(0, len(names), IMAGES_PER_PRODUCT)]
    log_offset = system.logs["worker"].stat().st_size
    watch = CpuWatch(system.cpu_groups())
    watch.start()
    started_wall, started = time.time(), time.perf_counter()
    product_ids = [await system.post(batch) for batch in batches]
    post_seconds = time.perf_counter() - started
    # The end is the last row's updated_at, not when the poll sees it: a slow poll costs the
    # measurement nothing, and a fast one costs the machine CPU the system under test needs.
    last = await system.wait_ready(product_ids, len(names), timeout=600, poll=0.1)
    cpu = watch.stop(time.perf_counter() - started)
    await asyncio.sleep(0.2)  # the last `image.processed` line
    job_ms = _job_times(system.logs["worker"], log_offset, set(product_ids))
    processed = int(job_ms.pop("image.processed_count", 0))
    if processed != len(names):
        raise PipelineError(f"{processed} images processed for {len(names)} posted")
    seconds = last.timestamp() - started_wall
    return EndToEnd(len(names), seconds, post_seconds, cpu, job_ms, processed)


def _job_times(log: Path, offset: int, product_ids: set[int]) -> dict[str, float]:
    """Median `ms` of the workers' `image.fetched` and `image.processed` events for these
    products after `offset` (processed: from the job's start to the stored result, before
    the DB write). A warm-up job may log its line just after its row turned ready."""
    times: dict[str, list[float]] = {"image.fetched": [], "image.processed": []}
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if (
                    event.get("event") in times
                    and "ms" in event
                    and event.get("product_id") in product_ids
                ):
                    times[event["event"]].append(float(event["ms"]))
    return (
        {
            f"{name}_median": round(statistics.median(values), 1)
            for name, values in times.items()
            if values
        }
        | {f"{name}_sum_s": round(sum(values) / 1000, 2) for name, values in times.items()}
        | {f"{name}_count": len(values) for name, values in times.items()}
    )


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


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(slots=True)
class RssSampler:
    """VmRSS of the worker processes every `interval` s, in a thread."""

    pids: Callable[[], list[int]]
    interval: float = 0.02
    peak_kb: dict[int, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids():
                rss = _status_kb(pid, "VmRSS")
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


async def big_image_rss(system: System, corpus: Corpus) -> dict[str, Any]:
    children = system.worker_children()
    before = {pid: _status_kb(pid, "VmRSS") for pid in children}
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
        "peak_mb": round(max(sampler.peak_kb.values()) / 1024, 1),
        "peak_mb_per_process": {pid: round(kb / 1024, 1) for pid, kb in sampler.peak_kb.items()},
        "before_mb_per_process": {pid: round(kb / 1024, 1) for pid, kb in before.items()},
        "busiest_pid": busiest,
        "busiest_growth_mb": round(growth[busiest] / 1024, 1),
        "hwm_mb_after": {pid: round(_status_kb(pid, "VmHWM") / 1024, 1) for pid in children},
        "samples": sampler.samples,
        "post_to_ready_ms": round((ready_at.timestamp() - sent) * 1000, 1),
        "processing_ms": round(
            (job["finished_at"].timestamp() - job["started_at"].timestamp()) * 1000, 1
        ),
        "source": f"{corpus.big} ({job['bytes_in'] / 1e6:.1f} MB)",
        "output": f"{job['width']}x{job['height']} ({job['bytes_out'] / 1e3:.0f} kB)",
    }


async def _warm_up(system: System, corpus: Corpus) -> None:
    """Until both worker processes are up and have each processed images (lazy bootstrap,
    first decode), so the throughput run measures steady state."""
    deadline = time.monotonic() + 60
    while len(system.worker_children()) < WORKER_PROCESSES:
        if system.worker.poll() is not None or time.monotonic() > deadline:
            raise PipelineError(f"the workers did not start; see {system.logs['worker']}")
        await asyncio.sleep(0.2)
    ids = [await system.post(list(corpus.images[:4])) for _ in range(2)]
    await system.wait_ready(ids, 8, timeout=120)


def _sample(lat: Latency) -> dict[str, Any]:
    return {
        "image": lat.name,
        "total_ms": round(lat.total_ms, 1),
        "post_ms": round(lat.post_ms, 1),
        **lat.stages_ms,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _cpu_note(cpu: dict[str, float]) -> str:
    keys = ("workers", "api", "postgres", "rabbitmq", "redis", "files", "bench")
    return cpu_note(cpu, {key: key for key in keys})


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
        print(
            f"[pipeline] corpus: {len(names)} images ({corpus.origin}); machine busy "
            f"{background:.0f} % of a core before starting",
            file=sys.stderr,
        )
        print("[pipeline] bare libvips, 1 process...", file=sys.stderr)
        bare1 = await asyncio.to_thread(bare_throughput, paths, 1, rounds)
        token = await prepare_database()
        pairs = 1 if options.quick else PAIRS
        bares: list[BareResult] = []
        e2es: list[EndToEnd] = []
        with rabbitmq_vhost():
            async with running_system(corpus, token) as system:
                print("[pipeline] warming up the workers...", file=sys.stderr)
                await _warm_up(system, corpus)
                for window in range(pairs + 1):  # bare, e2e, bare, ..., e2e, bare
                    print(
                        f"[pipeline] bare, 2 processes ({window + 1}/{pairs + 1})...",
                        file=sys.stderr,
                    )
                    bares.append(
                        await asyncio.to_thread(bare_throughput, paths, WORKER_PROCESSES, rounds)
                    )
                    if window < pairs:
                        step = f"{window + 1}/{pairs}: {len(names)} images x {rounds}"
                        print(f"[pipeline] end to end ({step})...", file=sys.stderr)
                        e2es.append(await end_to_end(system, names * rounds))
                await asyncio.sleep(2)  # let the machine settle: the next rows are "idle"
                print("[pipeline] one image at a time...", file=sys.stderr)
                spread = [
                    names[round(i * (len(names) - 1) / (LATENCY_SAMPLES - 1))]
                    for i in range(LATENCY_SAMPLES)
                ]
                latencies = []
                for name in spread:
                    latencies.append(await one_image_latency(system, name))
                    await asyncio.sleep(0.3)
                print("[pipeline] RSS while processing a 50 MP JPEG...", file=sys.stderr)
                rss = await big_image_rss(system, corpus)
        ratios = [
            e2e.images_per_s / statistics.mean([bares[i].images_per_s, bares[i + 1].images_per_s])
            for i, e2e in enumerate(e2es)
        ]
        bare2 = sorted(bares, key=lambda b: b.images_per_s)[len(bares) // 2]
        e2e = sorted(e2es, key=lambda e: e.images_per_s)[len(e2es) // 2]
        result.meta["side_by_side"] = {
            "bare_2_processes_images_per_s": [round(b.images_per_s, 2) for b in bares],
            "end_to_end_images_per_s": [round(e.images_per_s, 2) for e in e2es],
            "ratios": [round(r, 3) for r in ratios],
        }
        self._rows(result, bare1, bare2, e2e, ratios, latencies, rss)
        return result

    def _rows(
        self,
        result: SectionResult,
        bare1: BareResult,
        bare2: BareResult,
        e2e: EndToEnd,
        ratios: list[float],
        latencies: list[Latency],
        rss: dict[str, Any],
    ) -> None:
        """`bare2` and `e2e` are the median windows; each of `ratios` is an e2e window over
        the mean of the bare windows on either side of it, and their median is the ratio."""
        ratio = statistics.median(ratios)
        for bare in (bare1, bare2):
            result.rows.append(
                Row(
                    section=self.name,
                    name=f"bare libvips process(), {bare.processes} process(es) (images/s)",
                    requests_per_s=bare.images_per_s,
                    p50_ms=statistics.median(bare.per_image_ms),
                    p99_ms=_percentile(bare.per_image_ms, 0.99),
                    ratio=bare.images_per_s / bare2.images_per_s,
                    note=f"bare {bare.cpu.get('bare', 0):.0f} "
                    f"machine {bare.cpu.get('machine', 0):.0f}",
                    extra={"images": bare.images, "seconds": round(bare.seconds, 2)},
                )
            )
        result.rows.append(
            Row(
                section=self.name,
                name="end to end, POST -> all ready, 2 worker processes (images/s)",
                requests_per_s=e2e.images_per_s,
                ratio=ratio,
                note=_cpu_note(e2e.cpu),
                extra={
                    "images": e2e.images,
                    "processed_events": e2e.processed,
                    "seconds": round(e2e.seconds, 2),
                    "post_seconds": round(e2e.post_seconds, 2),
                    "worker_log_ms": e2e.job_ms,
                    "cpu_percent_of_one_core": e2e.cpu,
                },
            )
        )
        totals = [lat.total_ms for lat in latencies]
        p50, p95 = statistics.median(totals), _percentile(totals, 0.95)
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
                    "samples": [_sample(lat) for lat in latencies],
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
        lines = [
            f"end to end / bare (2 processes), median of {len(ratios)} side-by-side pairs: "
            f"{ratio:.2f}  (target >= {TARGET_RATIO}: "
            f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}); pairs: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f"; median windows {e2e.images_per_s:.1f} / {bare2.images_per_s:.1f} images/s",
            f"bare 2 processes / 1 process: {bare2.images_per_s / bare1.images_per_s:.2f}",
            f"one image POST -> ready: p50 {p50:.0f} ms, p95 {p95:.0f} ms (target p50 <= "
            f"{TARGET_P50_MS:.0f} ms: {'met' if p50 <= TARGET_P50_MS else 'NOT met'}); "
            f"median stages: {stages}",
            f"worker RSS with a 50 MP JPEG: peak {rss['peak_mb']:.0f} MB (target < "
            f"{TARGET_RSS_MB:.0f} MB: {'met' if rss['peak_mb'] < TARGET_RSS_MB else 'NOT met'}); "
            f"processed in {rss['processing_ms']:.0f} ms, "
            f"POST -> ready {rss['post_to_ready_ms']:.0f} ms",
            f"CPU during end to end (% of one core): {_cpu_note(e2e.cpu)}",
            f"per job (worker log, medians): fetch {e2e.job_ms.get('image.fetched_median')} ms,"
            f" whole job {e2e.job_ms.get('image.processed_median')} ms; bare process() median"
            f" {statistics.median(bare2.per_image_ms):.0f} ms (2 processes)",
        ]
        result.notes.append(("Pipeline ratios and targets", "\n".join(lines)))
        result.meta["targets"] = {
            "ratio": round(ratio, 3),
            "ratio_met": ratio >= TARGET_RATIO,
            "latency_p50_ms": round(p50, 1),
            "latency_p95_ms": round(p95, 1),
            "latency_met": p50 <= TARGET_P50_MS,
            "rss_peak_mb": rss["peak_mb"],
            "rss_met": rss["peak_mb"] < TARGET_RSS_MB,
        }

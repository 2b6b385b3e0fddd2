"""The CSV import benchmark (issue #18): the real services against bare baselines, side by side
in one run.

The system: `stockroom serve` (API, outbox relay, completion sweep) and `stockroom worker
--queues imports --processes 2` as subprocesses on PostgreSQL (`stockroom_bench_imports`),
RabbitMQ (a vhost of its own, deleted afterwards), Redis db 15 and file storage; the corpus
served on 127.0.0.1 by `benchmarks/origin.py`. Default settings (batches of 500 rows).

* (a) Rows: a CSV of N rows without images (100,000; 10,000 with --quick), each import by a
  user of its own (every row an insert), rows/s = N / (POST sent -> the import's
  `finished_at`), against a bare asyncpg `executemany` of the same rows as
  `INSERT ... ON CONFLICT (user_id, sku) DO UPDATE` into the same `products` table, for
  another fresh user. Windows alternate (bare, import, bare, ...); each import window is
  divided by the mean of the bare windows on either side; the ratio is the median.
* (b) Memory: the API processes' RSS sampled every 20 ms while a 50 MB file of 100,000 rows
  (long descriptions, no images) is posted and checked; --quick: 10 MB.
* (c) Images: 1,000 rows with one corpus photograph each (every URL unique, so each is
  downloaded and processed), images/s = 1,000 / (POST sent -> `finished_at`), against the
  bare libvips loop of benchmarks/bare.py (the same-options `thumbnail_buffer` loop, 2
  processes, one libvips thread each) over the corpus, alternating as in (a).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from benchmarks import RESULTS_DIR, Options, Row, SectionResult
from benchmarks.bare import DEFAULT_SHAPE, BarePool, BareResult
from benchmarks.corpus import Corpus, load_or_build
from benchmarks.load import CpuWatch, busy_cores, cpu_note, pids_named, process_tree
from benchmarks.rss import RssSampler
from benchmarks.seed import recreate_database
from benchmarks.servers import free_port, production_env, stop, wait_healthy
from benchmarks.system import clear_redis_prefix, rabbitmq_vhost, start_process

DB_NAME = "stockroom_bench_imports"
DSN = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
DATABASE_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB_NAME}"
VHOST = "stockroom_bench_imports"
BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
REDIS_URL = "redis://127.0.0.1:6379/15"  # db 15 only: db 0 belongs to others
KEY_PREFIX = "bench-imports:"
MEDIA_DIR = RESULTS_DIR / "imports-media"
WORKER_PROCESSES = 2
USERS = 16
HEADER = ["Serial Number", "Product Name", "Input Image URLs", "Price", "Description"]
TARGET_ROWS_RATIO = 0.3
TARGET_RSS_MB = 300.0
TARGET_IMAGES_RATIO = 0.8
PAIRS = int(os.environ.get("BENCH_IMPORTS_PAIRS", "2"))
UPSERT = """
INSERT INTO products (user_id, sku, product_name, product_description, product_price,
                      created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $6)
ON CONFLICT (user_id, sku) DO UPDATE SET product_name = EXCLUDED.product_name,
    product_description = EXCLUDED.product_description,
    product_price = EXCLUDED.product_price, updated_at = EXCLUDED.updated_at
"""


class ImportsError(RuntimeError):
    pass


def _log(text: str) -> None:
    print(f"[imports] {text}", file=sys.stderr)


# --- the files ------------------------------------------------------------------------------


def catalogue(rows: int, *, prefix: str, description: int = 40) -> list[list[str]]:
    """`rows` product rows without images: sku, name, no URL, a price, a description."""
    filler = ("Solid oak, hand finished; ships flat. " * (description // 38 + 1))[:description]
    return [
        [f"{prefix}-{n:06d}", f"Bench product {n}", "", f"{1 + n % 997}.{n % 100:02d}", filler]
        for n in range(rows)
    ]


def csv_file(records: list[list[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(records)
    return text.getvalue().encode()


# --- the running system ---------------------------------------------------------------------


@dataclass(slots=True)
class System:
    api_url: str
    files_url: str
    tokens: list[tuple[int, str]]  # (user id, token), one per import
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    files: subprocess.Popen[bytes]
    db: asyncpg.Connection
    logs: dict[str, Path] = field(default_factory=dict)
    used: int = 0

    def cpu_groups(self) -> dict[str, Any]:
        return {
            "api": lambda: process_tree(self.api.pid),
            "workers": lambda: process_tree(self.worker.pid),
            "postgres": lambda: pids_named("postgres"),
            "rabbitmq": lambda: pids_named("beam.smp"),
            "files": lambda: [self.files.pid],
            "bench": lambda: [os.getpid()],
        }

    def next_user(self) -> tuple[int, str]:
        self.used += 1
        if self.used > len(self.tokens):
            raise ImportsError("more imports than bench users")
        return self.tokens[self.used - 1]


async def prepare_database() -> list[tuple[int, str]]:
    """Drop, create and migrate the database; USERS users with a token each."""
    from stockroom.db.migrate import upgrade

    await recreate_database(DB_NAME)
    await asyncio.to_thread(upgrade, DATABASE_URL)
    conn = await asyncpg.connect(DSN)
    users = []
    try:
        for n in range(USERS):
            token = "sr_" + secrets.token_urlsafe(32)
            user_id = await conn.fetchval(
                "INSERT INTO users (email, name, is_admin, created_at)"
                " VALUES ($1, 'Imports bench', false, now()) RETURNING id",
                f"imports{n}@bench.local",
            )
            await conn.execute(
                "INSERT INTO api_tokens (user_id, token_hash, name, created_at)"
                " VALUES ($1, $2, 'bench', now())",
                user_id,
                hashlib.sha256(token.encode()).hexdigest(),
            )
            users.append((user_id, token))
    finally:
        await conn.close()
    return users


@contextlib.asynccontextmanager
async def running_system(corpus: Corpus, tokens: list[tuple[int, str]]) -> AsyncIterator[System]:
    bin_dir = Path(sys.executable).parent
    if MEDIA_DIR.exists():
        shutil.rmtree(MEDIA_DIR)
    MEDIA_DIR.mkdir(parents=True)
    # Our keys only: other benchmarks may be using db 15 meanwhile.
    await asyncio.to_thread(clear_redis_prefix, KEY_PREFIX)
    api_port, files_port = free_port(), free_port()
    env = production_env(
        STOCKROOM_DATABASE_URL=DATABASE_URL,
        STOCKROOM_BROKER_URL=BROKER_URL,
        STOCKROOM_CACHE_URL=REDIS_URL,
        STOCKROOM_CACHE_KEY_PREFIX=KEY_PREFIX,
        STOCKROOM_STORAGE_URL=f"file://{MEDIA_DIR.resolve()}",
        STOCKROOM_PUBLIC_BASE_URL=f"http://127.0.0.1:{api_port}",
        STOCKROOM_ALLOW_PRIVATE_NETWORKS="true",
        VIPS_CONCURRENCY=os.environ.get("BENCH_WORKER_VIPS_CONCURRENCY", "1"),
    )
    logs = {name: RESULTS_DIR / f"imports-{name}.log" for name in ("files", "api", "worker")}
    files = start_process(
        [sys.executable, "-m", "benchmarks.origin", str(files_port), str(corpus.directory)],
        env,
        logs["files"],
    )
    api = start_process(
        [str(bin_dir / "stockroom"), "serve", "--host", "127.0.0.1", "--port", str(api_port)],
        env,
        logs["api"],
    )
    worker = start_process(
        [str(bin_dir / "stockroom"), "worker", "--queues", "imports",
         "--processes", str(WORKER_PROCESSES)],
        env, logs["worker"],
    )  # fmt: skip
    db = await asyncpg.connect(DSN)
    system = System(
        api_url=f"http://127.0.0.1:{api_port}",
        files_url=f"http://127.0.0.1:{files_port}",
        tokens=tokens,
        api=api,
        worker=worker,
        files=files,
        db=db,
        logs=logs,
    )
    try:
        await wait_healthy(system.api_url, api, logs["api"])
        deadline = time.monotonic() + 60
        while len(process_tree(worker.pid)) <= WORKER_PROCESSES:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise ImportsError(f"the workers did not start; see {logs['worker']}")
            await asyncio.sleep(0.2)
        yield system
    finally:
        await db.close()
        for process in (worker, api, files):
            stop(process, timeout=30)


# --- the measurements -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportRun:
    rows: int
    images: int
    seconds: float  # POST sent -> finished_at
    post_seconds: float  # the POST's answer (the file checked and stored)
    rows_seconds: float  # POST sent -> the last batch written (max product created_at)
    status: str
    cpu: dict[str, float]
    api_peak_mb: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


async def run_import(
    system: System, data: bytes, rows: int, images: int, *, rss: bool = False
) -> ImportRun:
    user_id, token = system.next_user()
    headers = {"Authorization": f"Bearer {token}"}
    sampler = RssSampler(lambda: process_tree(system.api.pid)) if rss else None
    if sampler is not None:
        sampler.start()
    watch = CpuWatch(system.cpu_groups())
    watch.start()
    async with httpx.AsyncClient(base_url=system.api_url, headers=headers, timeout=600) as http:
        sent_wall, sent = time.time(), time.perf_counter()
        response = await http.post("/imports", files={"file": ("bench.csv", data, "text/csv")})
        post_seconds = time.perf_counter() - sent
        if response.status_code != 202:
            raise ImportsError(f"POST /imports: {response.status_code} {response.text[:500]}")
        import_id = response.json()["request_id"]
        deadline = time.monotonic() + 1800
        while True:
            status = (await http.get(f"/imports/{import_id}")).json()
            if status["status"] in ("completed", "completed_with_errors", "failed"):
                break
            if time.monotonic() > deadline:
                raise ImportsError(f"import {import_id} not finished: {status}")
            await asyncio.sleep(0.1)
    cpu = watch.stop(time.perf_counter() - sent)
    if sampler is not None:
        sampler.stop()
    if status["status"] != "completed" or status["images_done"] != images:
        raise ImportsError(f"import {import_id}: {status}; see {system.logs}")
    finished = datetime.fromisoformat(status["finished_at"]).timestamp()
    last_row = await system.db.fetchval(
        "SELECT max(created_at) FROM products WHERE user_id = $1", user_id
    )
    return ImportRun(
        rows=rows,
        images=images,
        seconds=finished - sent_wall,
        post_seconds=post_seconds,
        rows_seconds=last_row.timestamp() - sent_wall,
        status=status["status"],
        cpu=cpu,
        api_peak_mb=sampler.peak_mb if sampler is not None else 0.0,
    )


async def bare_upsert(records: list[list[str]], user_id: int) -> float:
    """The same rows into `products` by one asyncpg executemany; seconds."""
    now = datetime.now(UTC)
    values = [
        (user_id, sku, name, description or None, Decimal(price), now)
        for sku, name, _, price, description in records
    ]
    conn = await asyncpg.connect(DSN)
    try:
        started = time.perf_counter()
        await conn.executemany(UPSERT, values)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _bare_user(db: asyncpg.Connection, n: int) -> int:
    user_id: int = await db.fetchval(
        "INSERT INTO users (email, name, is_admin, created_at)"
        " VALUES ($1, 'Bare upsert', false, now()) RETURNING id",
        f"bare{n}-{secrets.token_hex(4)}@bench.local",
    )
    return user_id


def _side_by_side(e2e: list[float], bare: list[float]) -> list[float]:
    """Each e2e window over the mean of the bare windows on either side of it."""
    return [value / statistics.mean(bare[i : i + 2]) for i, value in enumerate(e2e)]


def _cpu_note(cpu: dict[str, float]) -> str:
    keys = ("workers", "api", "postgres", "rabbitmq", "files", "bench")
    return cpu_note(cpu, {key: key for key in keys})


class ImportsBenchmark:
    name = "imports"
    title = "CSV imports: rows vs asyncpg executemany, API memory, images vs bare libvips"

    async def run(self, options: Options) -> SectionResult:
        quick = options.quick
        result = SectionResult(self.name, self.title)
        corpus = await asyncio.to_thread(load_or_build)
        result.meta["cpu_busy_before"] = await busy_cores()
        rows = 10_000 if quick else 100_000
        pairs = 1 if quick else PAIRS
        big_rows, big_description = (20_000, 440) if quick else (100_000, 440)
        image_rows = len(corpus.images) if quick else 1_000
        tokens = await prepare_database()
        with rabbitmq_vhost(VHOST):
            async with running_system(corpus, tokens) as system:
                _log("warming up (a small import with images)...")
                await self._images(system, corpus, 20)
                bare_rows, e2e_rows = await self._rows(system, rows, pairs)
                _log(f"API memory, one {big_rows:,}-row file...")
                records = catalogue(big_rows, prefix="M", description=big_description)
                data = csv_file(records)
                del records
                big = await run_import(system, data, big_rows, 0, rss=True)
                size_mb = len(data) / 1e6
                del data
                bare_images, e2e_images = await self._image_windows(
                    system, corpus, image_rows, pairs
                )
        self._report(result, bare_rows, e2e_rows, big, size_mb, bare_images, e2e_images)
        return result

    async def _rows(
        self, system: System, rows: int, pairs: int
    ) -> tuple[list[float], list[ImportRun]]:
        records = catalogue(rows, prefix="A")
        data = csv_file(records)
        bare: list[float] = []
        e2e: list[ImportRun] = []
        for window in range(pairs + 1):
            _log(f"bare executemany upsert, {rows:,} rows ({window + 1}/{pairs + 1})...")
            seconds = await bare_upsert(records, await _bare_user(system.db, window))
            bare.append(rows / seconds)
            if window < pairs:
                _log(f"import of {rows:,} rows ({window + 1}/{pairs})...")
                e2e.append(await run_import(system, data, rows, 0))
        return bare, e2e

    async def _images(self, system: System, corpus: Corpus, count: int) -> ImportRun:
        names = [corpus.images[n % len(corpus.images)] for n in range(count)]
        stamp = secrets.token_hex(4)
        records = [
            [f"I-{stamp}-{n}", f"Photo {n}", f"{system.files_url}/{name}?i={stamp}.{n}", "5", ""]
            for n, name in enumerate(names)
        ]
        return await run_import(system, csv_file(records), count, count)

    async def _image_windows(
        self, system: System, corpus: Corpus, count: int, pairs: int
    ) -> tuple[list[BareResult], list[ImportRun]]:
        paths = [corpus.path(name) for name in corpus.images]
        rounds = max(1, round(count / len(paths)))
        bare: list[BareResult] = []
        e2e: list[ImportRun] = []
        with BarePool(paths, WORKER_PROCESSES) as pool:
            for window in range(pairs + 1):
                _log(f"bare libvips, {len(paths) * rounds} images ({window + 1}/{pairs + 1})...")
                bare.append(await asyncio.to_thread(pool.run, "same", DEFAULT_SHAPE, rounds))
                if window < pairs:
                    _log(f"import of {count} rows with a photo each ({window + 1}/{pairs})...")
                    e2e.append(await self._images(system, corpus, count))
        return bare, e2e

    def _report(
        self,
        result: SectionResult,
        bare_rows: list[float],
        e2e_rows: list[ImportRun],
        big: ImportRun,
        size_mb: float,
        bare_images: list[BareResult],
        e2e_images: list[ImportRun],
    ) -> None:
        rows_ratios = _side_by_side([run.rows_per_s for run in e2e_rows], bare_rows)
        rows_ratio = statistics.median(rows_ratios)
        bare_rates = [b.images_per_s for b in bare_images]
        image_ratios = _side_by_side([run.images_per_s for run in e2e_images], bare_rates)
        image_ratio = statistics.median(image_ratios)
        mid_rows = sorted(e2e_rows, key=lambda run: run.rows_per_s)[len(e2e_rows) // 2]
        mid_images = sorted(e2e_images, key=lambda run: run.images_per_s)[len(e2e_images) // 2]
        result.rows += [
            Row(
                section=self.name,
                name=f"bare asyncpg executemany upsert, {mid_rows.rows:,} rows (rows/s)",
                requests_per_s=statistics.median(bare_rows),
                ratio=1.0,
                extra={"windows_rows_per_s": [round(r) for r in bare_rows]},
            ),
            Row(
                section=self.name,
                name=f"import, {mid_rows.rows:,} rows, POST -> completed (rows/s)",
                requests_per_s=mid_rows.rows_per_s,
                ratio=rows_ratio,
                note=_cpu_note(mid_rows.cpu),
                extra={
                    "windows_rows_per_s": [round(run.rows_per_s) for run in e2e_rows],
                    "ratios": [round(r, 3) for r in rows_ratios],
                    "seconds": round(mid_rows.seconds, 2),
                    "post_seconds": round(mid_rows.post_seconds, 2),
                    "to_last_row_seconds": round(mid_rows.rows_seconds, 2),
                },
            ),
            Row(
                section=self.name,
                name=f"API peak RSS, {size_mb:.0f} MB file of {big.rows:,} rows (MB in note)",
                requests_per_s=big.rows_per_s,
                p50_ms=big.post_seconds * 1000,
                note=f"peak {big.api_peak_mb:.0f} MB; POST ms in p50; rows/s end to end",
                extra={"peak_mb": big.api_peak_mb, "seconds": round(big.seconds, 2)},
            ),
            Row(
                section=self.name,
                name=f"bare libvips same-options loop, {WORKER_PROCESSES} processes (images/s)",
                requests_per_s=statistics.median(bare_rates),
                ratio=1.0,
                extra={"windows_images_per_s": [round(r, 2) for r in bare_rates]},
            ),
            Row(
                section=self.name,
                name=f"import, {mid_images.rows:,} rows with a photo each, POST -> completed "
                "(images/s)",
                requests_per_s=mid_images.images_per_s,
                ratio=image_ratio,
                note=_cpu_note(mid_images.cpu),
                extra={
                    "windows_images_per_s": [round(run.images_per_s, 2) for run in e2e_images],
                    "ratios": [round(r, 3) for r in image_ratios],
                    "seconds": round(mid_images.seconds, 2),
                    "post_seconds": round(mid_images.post_seconds, 2),
                },
            ),
        ]
        lines = [
            f"(a) rows: import / bare executemany, median of {len(rows_ratios)} pairs: "
            f"{rows_ratio:.2f} (target >= {TARGET_ROWS_RATIO}: "
            f"{'met' if rows_ratio >= TARGET_ROWS_RATIO else 'NOT met'}); pairs "
            + ", ".join(f"{r:.2f}" for r in rows_ratios),
            f"(b) API peak RSS with a {size_mb:.0f} MB file: {big.api_peak_mb:.0f} MB (target < "
            f"{TARGET_RSS_MB:.0f}: {'met' if big.api_peak_mb < TARGET_RSS_MB else 'NOT met'}); "
            f"POST answered in {big.post_seconds:.1f} s, completed in {big.seconds:.1f} s",
            f"(c) images: import / bare libvips, median of {len(image_ratios)} pairs: "
            f"{image_ratio:.2f} (target >= {TARGET_IMAGES_RATIO}: "
            f"{'met' if image_ratio >= TARGET_IMAGES_RATIO else 'NOT met'}); pairs "
            + ", ".join(f"{r:.2f}" for r in image_ratios),
        ]
        result.notes.append(("Import ratios and targets", "\n".join(lines)))
        result.meta["targets"] = {
            "rows_ratio": round(rows_ratio, 3),
            "rows_met": rows_ratio >= TARGET_ROWS_RATIO,
            "api_peak_mb": big.api_peak_mb,
            "rss_met": big.api_peak_mb < TARGET_RSS_MB,
            "images_ratio": round(image_ratio, 3),
            "images_met": image_ratio >= TARGET_IMAGES_RATIO,
        }

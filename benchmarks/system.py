"""The real system under test, shared by the `pipeline` and `jobs` sections: `stockroom
serve` (API + outbox relay) and `stockroom worker` as subprocesses on PostgreSQL
(`stockroom_bench_pipeline`), RabbitMQ (a vhost of its own, deleted afterwards), Redis db 15
and file storage, with the corpus served on 127.0.0.1 by two `benchmarks/origin.py`
processes: one keeps connections alive, one closes every connection (HTTP/1.0 style).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import RESULTS_DIR
from benchmarks.corpus import Corpus
from benchmarks.load import pids_named, process_tree
from benchmarks.load_client import LoadClient
from benchmarks.seed import recreate_database
from benchmarks.servers import free_port, production_env, stop, wait_healthy

DB_NAME = "stockroom_bench_pipeline"
DSN = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
DATABASE_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB_NAME}"
VHOST = "stockroom_bench"
BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
REDIS_URL = "redis://127.0.0.1:6379/15"  # db 15 only: db 0 belongs to others
MEDIA_DIR = RESULTS_DIR / "pipeline-media"
WORKER_PROCESSES = 2
QUEUES = "images,jobs"


class PipelineError(RuntimeError):
    pass


@dataclass(slots=True)
class System:
    api_url: str
    files_url: str  # keep-alive origin
    closing_files_url: str  # an origin that closes every connection
    tokens: tuple[str, ...]  # one per user of `prepare_database`
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    files: list[subprocess.Popen[bytes]]
    db: asyncpg.Connection
    http: LoadClient  # the bench's own calls; each simulated client has its own
    worker_command: list[str]
    worker_env: dict[str, str]
    posted: int = 0
    logs: dict[str, Path] = field(default_factory=dict)

    def cpu_groups(self) -> dict[str, Callable[[], list[int]]]:
        return {
            "api": lambda: process_tree(self.api.pid),
            "workers": lambda: process_tree(self.worker.pid),
            "postgres": lambda: pids_named("postgres"),
            "rabbitmq": lambda: pids_named("beam.smp"),
            "redis": lambda: pids_named("redis-server"),
            "files": lambda: [p.pid for p in self.files],
            "bench": lambda: [os.getpid()],
        }

    def worker_children(self) -> list[int]:
        return [pid for pid in process_tree(self.worker.pid) if pid != self.worker.pid]

    def unique_url(self, name: str, *, closing: bool = False) -> str:
        """The corpus file `name` at a URL never used before (the origin ignores the query)."""
        self.posted += 1
        base = self.closing_files_url if closing else self.files_url
        return f"{base}/{name}?n={self.posted}"

    async def post(
        self, names: list[str], *, closing: bool = False, http: LoadClient | None = None
    ) -> int:
        """POST one product with these corpus images (unique URLs); returns its id."""
        urls = [self.unique_url(name, closing=closing) for name in names]
        body = {
            "product_name": f"Bench product {self.posted}",
            "product_price": "10.00",
            "product_images": urls,
        }
        response = await (http or self.http).post_json("/products", body)
        if response.status_code != 201:
            raise PipelineError(f"POST /products: {response.status_code} {response.text[:500]}")
        product_id: int = response.json()["id"]
        return product_id

    async def submit_job(
        self,
        name: str,
        operations: list[dict[str, Any]] | None,
        *,
        http: LoadClient | None = None,
    ) -> str:
        """POST /jobs for the corpus file `name` (a unique URL); returns the job id."""
        body: dict[str, Any] = {"image_url": self.unique_url(name)}
        if operations is not None:
            body["operations"] = operations
        response = await (http or self.http).post_json("/jobs", body)
        if response.status_code != 202:
            raise PipelineError(f"POST /jobs: {response.status_code} {response.text[:500]}")
        job_id: str = response.json()["id"]
        return job_id

    def client(self, user: int = 0) -> LoadClient:
        """A client of its own (its own connections), authorised as bench user `user`."""
        return LoadClient(self.api_url, self.tokens[user % len(self.tokens)])

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

    async def wait_workers(self) -> None:
        deadline = time.monotonic() + 60
        while len(self.worker_children()) < WORKER_PROCESSES:
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise PipelineError(f"the workers did not start; see {self.logs['worker']}")
            await asyncio.sleep(0.2)

    async def restart_worker(self, **overrides: str) -> None:
        """Stop the workers and start them again with these environment overrides."""
        stop(self.worker, timeout=30)
        self.worker = start_process(self.worker_command, {**self.worker_env, **overrides},
                             self.logs["worker"], append=True)  # fmt: skip
        await self.wait_workers()


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", *args], check=check, capture_output=True, timeout=60)


@contextlib.contextmanager
def rabbitmq_vhost(vhost: str = VHOST) -> Iterator[None]:
    """A vhost of a section's own, so no other user's queue is touched; deleted on exit."""
    _rabbitmqctl("delete_vhost", vhost, check=False)
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield
    finally:
        _rabbitmqctl("delete_vhost", vhost, check=False)


async def prepare_database(users: int = 1) -> list[str]:
    """Drop, create and migrate the pipeline database; `users` users, a token each."""
    from stockroom.db.migrate import upgrade

    await recreate_database(DB_NAME)
    await asyncio.to_thread(upgrade, DATABASE_URL)
    tokens = ["sr_" + secrets.token_urlsafe(32) for _ in range(users)]
    conn = await asyncpg.connect(DSN)
    try:
        for index, token in enumerate(tokens):
            user_id = await conn.fetchval(
                "INSERT INTO users (email, name, is_admin, created_at)"
                " VALUES ($1, $2, false, now()) RETURNING id",
                "pipeline@bench.local" if index == 0 else f"pipeline-{index}@bench.local",
                "Pipeline bench" if index == 0 else f"Pipeline bench {index}",
            )
            await conn.execute(
                "INSERT INTO api_tokens (user_id, token_hash, name, created_at)"
                " VALUES ($1, $2, 'bench', now())",
                user_id,
                hashlib.sha256(token.encode()).hexdigest(),
            )
    finally:
        await conn.close()
    return tokens


def clear_redis_prefix(prefix: str) -> None:
    """Delete our keys in db 15: other benchmarks may be using the same db meanwhile."""
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def start_process(
    command: list[str], env: dict[str, str], log: Path, *, append: bool = False
) -> subprocess.Popen[bytes]:
    with log.open("ab" if append else "wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def system_env(api_port: int, cache_prefix: str) -> dict[str, str]:
    """The environment of the system's processes: production settings on the section's
    database, vhost, Redis key prefix and media folder, the API on `api_port`."""
    return production_env(
        STOCKROOM_DATABASE_URL=DATABASE_URL,
        STOCKROOM_BROKER_URL=BROKER_URL,
        STOCKROOM_CACHE_URL=REDIS_URL,
        STOCKROOM_CACHE_KEY_PREFIX=cache_prefix,
        STOCKROOM_STORAGE_URL=f"file://{MEDIA_DIR.resolve()}",
        STOCKROOM_PUBLIC_BASE_URL=f"http://127.0.0.1:{api_port}",
        STOCKROOM_ALLOW_PRIVATE_NETWORKS="true",
        VIPS_CONCURRENCY=os.environ.get("BENCH_WORKER_VIPS_CONCURRENCY", "1"),
    )


@contextlib.asynccontextmanager
async def running_system(corpus: Corpus, tokens: list[str], prefix: str) -> AsyncIterator[System]:
    """The whole system, logs in `.bench/<prefix>-*.log`; stopped on exit."""
    bin_dir = Path(sys.executable).parent
    if MEDIA_DIR.exists():
        shutil.rmtree(MEDIA_DIR)
    MEDIA_DIR.mkdir(parents=True)
    cache_prefix = f"bench-{prefix}:"
    await asyncio.to_thread(clear_redis_prefix, cache_prefix)
    api_port, files_port, closing_port = free_port(), free_port(), free_port()
    env = system_env(api_port, cache_prefix)
    logs = {
        "files": RESULTS_DIR / f"{prefix}-files.log",
        "api": RESULTS_DIR / f"{prefix}-api.log",
        "worker": RESULTS_DIR / f"{prefix}-worker.log",
    }
    origin = [sys.executable, "-m", "benchmarks.origin"]
    files = [
        start_process([*origin, str(files_port), str(corpus.directory)], env, logs["files"]),
        start_process([*origin, str(closing_port), str(corpus.directory)],
               {**env, "BENCH_ORIGIN_KEEPALIVE": "0"}, logs["files"], append=True),
    ]  # fmt: skip
    api = start_process(
        [str(bin_dir / "stockroom"), "serve", "--host", "127.0.0.1", "--port", str(api_port)],
        env,
        logs["api"],
    )
    # INFO for the workers only: their `image.fetched` / `image.processed` events (two JSON
    # lines per job) give the fetch and whole-job times behind the throughput.
    # Threads: the worker's default (STOCKROOM_WORKER_THREADS) unless BENCH_WORKER_THREADS.
    threads = os.environ.get("BENCH_WORKER_THREADS")
    worker_command = [
        str(bin_dir / "stockroom"), "worker", "--queues", QUEUES,
        "--processes", str(WORKER_PROCESSES), *(["--threads", threads] if threads else []),
    ]  # fmt: skip
    worker_env = {**env, "STOCKROOM_LOG_LEVEL": "INFO"}
    worker = start_process(worker_command, worker_env, logs["worker"])
    db = await asyncpg.connect(DSN)
    api_url = f"http://127.0.0.1:{api_port}"
    http = LoadClient(api_url, tokens[0])
    system = System(
        api_url=api_url,
        files_url=f"http://127.0.0.1:{files_port}",
        closing_files_url=f"http://127.0.0.1:{closing_port}",
        tokens=tuple(tokens),
        api=api,
        worker=worker,
        files=files,
        db=db,
        http=http,
        worker_command=worker_command,
        worker_env=worker_env,
        logs=logs,
    )
    try:
        await wait_healthy(api_url, api, logs["api"])
        yield system
    finally:
        await http.aclose()
        await db.close()
        for process in (system.worker, api, *files):
            stop(process, timeout=30)


async def warm_up(system: System, corpus: Corpus) -> None:
    """Until both worker processes are up and have each processed images (lazy bootstrap,
    first decode), so the measurements see steady state."""
    await system.wait_workers()
    ids = [await system.post(list(corpus.images[:4])) for _ in range(2)]
    await system.wait_ready(ids, 8, timeout=120)


def worker_log_times(log: Path, offset: int, key: str, ids: set[Any]) -> dict[str, float]:
    """Median, sum and count of the `ms` of the workers' `image.fetched` and
    `image.processed` events whose `key` (`product_id`, `job_id`) is in `ids`, after byte
    `offset` of the log (processed: from the job's start to the stored result, before the
    DB write); and of `image.processed`'s `vips_ms` (on a libvips thread) and `queued_ms`
    (waiting for one), as `image.vips` and `image.queued`."""
    times: dict[str, list[float]] = {
        "image.fetched": [],
        "image.processed": [],
        "image.vips": [],
        "image.queued": [],
    }
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                name = event.get("event")
                if name in times and "ms" in event and event.get(key) in ids:
                    times[name].append(float(event["ms"]))
                    if name == "image.processed" and "vips_ms" in event:
                        times["image.vips"].append(float(event["vips_ms"]))
                        times["image.queued"].append(float(event["queued_ms"]))
    return (
        {
            f"{name}_median": round(statistics.median(values), 1)
            for name, values in times.items()
            if values
        }
        | {f"{name}_sum_s": round(sum(values) / 1000, 2) for name, values in times.items()}
        | {f"{name}_count": len(values) for name, values in times.items()}
    )


SERVICES = ("api", "postgres", "rabbitmq", "redis", "files")


def cpu_ms_per_image(cpu: dict[str, float], seconds: float, images: int, *groups: str) -> float:
    """CPU the `groups` spent per image over a window (`cpu`: % of one core, CpuWatch's);
    unlike images/s, barely moved by what else the machine runs meanwhile."""
    return sum(cpu.get(group, 0.0) for group in groups) * 10 * seconds / max(images, 1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

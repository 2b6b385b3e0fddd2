"""The cache benchmark: GET /products/{id} on a cache hit, and with the cache disabled,
against anchors served by the same process (`benchmarks/anchor_app.py`), under uvicorn
and under granian, 64 connections.

Per server, two starts of the same build on the seeded PostgreSQL database
(`benchmarks/seed.py`, 100,000 products, 10,000 of them the benchmark user's):

1. `STOCKROOM_CACHE_URL=redis://127.0.0.1:6379/15` (db 15 is flushed first; never db 0):
   (a) constant bytes, the app's own GET /health, (b) one `redis.get`, (c) one asyncpg
   primary-key select, (d) GET /products/{id} over 1,000 products, all cached beforehand
   (served by the per-process near-cache, the default);
2. the same with `STOCKROOM_CACHE_NEAR_MAX_ENTRIES=0`: (b) again and (d') the hit served
   from Redis (token and product: two round trips);
3. the same with `STOCKROOM_CACHE_PRODUCTS=false`: (c) again (the same-process yardstick)
   and (e) GET /products/{id} over the same 1,000 products, every one read from PostgreSQL
   (the product cache is off; the token is still served by the cache, as in production);
4. `STOCKROOM_CACHE_URL=none://`: (c) again and (e') the same GET with no cache at all, so
   the token is read from PostgreSQL too (two selects per request), for reference.

Targets: (d) >= 0.8 x (b) in req/s with p99(d) <= 2 x p99(b); (e) >= 0.6 x (c).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import RESULTS_DIR, ROOT, Options, SectionResult
from benchmarks import seed as seeding
from benchmarks.load import (
    LoadResult,
    Wrk,
    busy_cores,
    cpu_note,
    load_row,
    pids_named,
    process_tree,
)
from benchmarks.servers import free_port, production_env, serving

CONNECTIONS = 64
REDIS_URL = "redis://127.0.0.1:6379/15"  # db 15 only: db 0 belongs to others
ANCHOR_KEY = "stockroom-bench:anchor"
PLAN = seeding.SeedPlan(total_products=100_000, user_products=10_000)
HOT_IDS = (10, 10_000, 10)  # first, last, step: 1,000 of the benchmark user's products
SERVERS = ("uvicorn", "granian")  # BENCH_CACHE_SERVERS=uvicorn narrows a run while iterating
TARGET_HIT = 0.8
TARGET_HIT_P99 = 2.0
TARGET_MISS = 0.6


class CacheBenchError(RuntimeError):
    pass


def _command(server: str, port: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    target = "benchmarks.anchor_app:create_app"
    if server == "uvicorn":
        return [
            str(bin_dir / "uvicorn"), target, "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning", "--lifespan", "on",
        ]  # fmt: skip
    return [
        str(bin_dir / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--loop", "uvloop", "--no-access-log",
        "--log-level", "warning", target,
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def bench_server(
    server: str, start: Start, log_path: Path
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = production_env(
        STOCKROOM_CACHE_URL=start.cache_url,
        STOCKROOM_CACHE_NEAR_MAX_ENTRIES=str(start.near_entries),
        STOCKROOM_CACHE_PRODUCTS=str(start.products).lower(),
        STOCKROOM_BROKER_URL="memory://",
        BENCH_ANCHOR_REDIS_URL=REDIS_URL,
        BENCH_ANCHOR_REDIS_KEY=ANCHOR_KEY,
        BENCH_ANCHOR_PG_DSN=seeding.BENCH_DSN,
        BENCH_ANCHOR_IDS=",".join(str(v) for v in HOT_IDS),
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    async with serving(_command(server, port), env, log_path, port, cwd=ROOT) as running:
        yield running


def _redis_flush_and_set(value: bytes | None) -> None:
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        if value is None:
            client.flushdb()
        else:
            client.set(ANCHOR_KEY, value)
    finally:
        client.close()


async def _prime(base_url: str, token: str, expect_cached: bool) -> bytes:
    """GET every hot product once (filling the cache when on), then check one more GET and
    each anchor, so a 401/404/500 fails loudly instead of being counted as throughput."""
    first, last, step = HOT_IDS
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        ids = list(range(first, last + 1, step))
        for chunk in range(0, len(ids), 32):
            responses = await asyncio.gather(
                *(client.get(f"/products/{i}") for i in ids[chunk : chunk + 32])
            )
            bad = [r for r in responses if r.status_code != 200]
            if bad:
                raise CacheBenchError(f"{bad[0].request.url}: {bad[0].status_code} {bad[0].text}")
        again = await client.get(f"/products/{first}")
        x_cache = again.headers.get("X-Cache")
        if expect_cached and x_cache != "HIT":
            raise CacheBenchError(f"expected X-Cache: HIT after priming, got {x_cache}")
        if not expect_cached and x_cache != "MISS":
            raise CacheBenchError(f"expected X-Cache: MISS with the cache off, got {x_cache}")
        body = again.content
        for path in ("/_bench/constant", "/_bench/pg-select", "/health"):
            response = await client.get(path)
            if response.status_code != 200:
                raise CacheBenchError(f"{path}: {response.status_code} {response.text}")
    return body


@dataclass(frozen=True, slots=True)
class ServerRun:
    server: str
    loads: dict[str, LoadResult]


ROWS = {
    "constant": "(a) constant bytes, /_bench/constant",
    "health": "(a') GET /health, the Stockroom app's constant endpoint",
    "redis": "(b) one redis.get, /_bench/redis-get",
    "pg": "(c) one asyncpg pk select, /_bench/pg-select",
    "hit": "(d) GET /products/{id}, cache hit (near-cache)",
    "redis_second": "(b) one redis.get, server with the near-cache off",
    "hit_redis": "(d') GET /products/{id}, cache hit from Redis (near-cache off)",
    "pg_nocache": "(c) one asyncpg pk select, server with the product cache off",
    "miss": "(e) GET /products/{id}, product cache off (STOCKROOM_CACHE_PRODUCTS=false)",
    "pg_none": "(c) one asyncpg pk select, server with no cache (none://)",
    "miss_none": "(e') GET /products/{id}, no cache at all (none://): token read too",
}


@dataclass(frozen=True, slots=True)
class Start:
    """One start of the server: its cache settings and the rows measured against it."""

    name: str
    cache_url: str
    near_entries: int
    products: bool
    rows: tuple[tuple[str, str, bool], ...]  # (row key, path, per-product ids + token)

    @property
    def caches_products(self) -> bool:
        return self.products and self.cache_url != "none://"


STARTS = (
    Start("redis", REDIS_URL, 10_000, True, (
        ("constant", "/_bench/constant", False),
        ("health", "/health", False),
        ("redis", "/_bench/redis-get", False),
        ("pg", "/_bench/pg-select", False),
        ("hit", "/products/1", True),
    )),
    Start("redis-only", REDIS_URL, 0, True, (
        ("redis_second", "/_bench/redis-get", False),
        ("hit_redis", "/products/1", True),
    )),
    Start("products-off", REDIS_URL, 10_000, False, (
        ("pg_nocache", "/_bench/pg-select", False),
        ("miss", "/products/1", True),
    )),
    Start("none", "none://", 0, True, (
        ("pg_none", "/_bench/pg-select", False),
        ("miss_none", "/products/1", True),
    )),
)  # fmt: skip


async def measure_server(server: str, token: str, seconds: float, warmup: float) -> ServerRun:
    loads: dict[str, LoadResult] = {}
    first, last, step = HOT_IDS
    ids = (str(first), str(last), str(step))
    for start in STARTS:
        await asyncio.to_thread(_redis_flush_and_set, None)
        log = RESULTS_DIR / f"server-cache-{server}-{start.name}.log"
        async with bench_server(server, start, log) as (base_url, process):
            body = await _prime(base_url, token, expect_cached=start.caches_products)
            # The anchor's value: the very bytes a hit returns, so (b) and (d) move as much.
            await asyncio.to_thread(_redis_flush_and_set, body)
            groups = {
                "server": lambda: process_tree(process.pid),
                "postgres": lambda: pids_named("postgres"),
                "redis": lambda: pids_named("redis-server"),
            }
            wrk = Wrk(base_url, groups)
            try:
                for key, path, per_product in start.rows:
                    print(f"[cache] {server} {key}: {CONNECTIONS} conn, {seconds:.0f} s",
                          file=sys.stderr)  # fmt: skip
                    loads[key] = await wrk.run(
                        path,
                        "ids" if per_product else "static",
                        ids if per_product else (),
                        token=token if per_product else None,
                        connections=CONNECTIONS,
                        seconds=seconds,
                        warmup_seconds=warmup,
                    )
            finally:
                wrk.close()
    return ServerRun(server, loads)


_CPU_LABELS = {"server": "srv", "wrk": "wrk", "postgres": "pg", "redis": "redis"}


def _verdicts(run: ServerRun) -> dict[str, float | bool]:
    loads = run.loads
    hit_ratio = loads["hit"].requests_per_s / loads["redis"].requests_per_s
    hit_p99 = loads["hit"].p99_ms / loads["redis"].p99_ms
    redis_hit_ratio = loads["hit_redis"].requests_per_s / loads["redis_second"].requests_per_s
    miss_ratio = loads["miss"].requests_per_s / loads["pg_nocache"].requests_per_s
    miss_ratio_first = loads["miss"].requests_per_s / loads["pg"].requests_per_s
    miss_none_ratio = loads["miss_none"].requests_per_s / loads["pg_none"].requests_per_s
    return {
        "hit_over_redis": round(hit_ratio, 3),
        "hit_p99_over_redis_p99": round(hit_p99, 2),
        "hit_met": hit_ratio >= TARGET_HIT and hit_p99 <= TARGET_HIT_P99,
        "redis_hit_over_redis": round(redis_hit_ratio, 3),
        "hit_over_constant": round(
            loads["hit"].requests_per_s / loads["constant"].requests_per_s, 3
        ),
        "miss_over_pg": round(miss_ratio, 3),
        "miss_over_pg_first_server": round(miss_ratio_first, 3),
        "miss_met": miss_ratio >= TARGET_MISS,
        "miss_none_over_pg": round(miss_none_ratio, 3),
    }


class CacheBenchmark:
    name = "cache"
    title = "Cache: GET /products/{id} vs same-process anchors, 64 connections"

    async def run(self, options: Options) -> SectionResult:
        seconds = 3.0 if options.quick else 10.0
        warmup = 1.0 if options.quick else 2.0
        print(f"[cache] seeding {PLAN.total_products:,} products...", file=sys.stderr)
        seeded = await seeding.prepare(PLAN)
        result = SectionResult(self.name, self.title)
        result.meta["cpu_busy_before_load"] = background = await busy_cores()
        print(f"[cache] machine busy {background:.0f} % of a core before loading", file=sys.stderr)
        servers = os.environ.get("BENCH_CACHE_SERVERS", ",".join(SERVERS)).split(",")
        unknown = set(servers) - set(SERVERS)
        if unknown:
            raise CacheBenchError(f"BENCH_CACHE_SERVERS: unknown server(s) {sorted(unknown)}")
        runs = [await measure_server(s, seeded.token, seconds, warmup) for s in servers]
        lines = []
        for run in runs:
            constant = run.loads["constant"].requests_per_s
            for key, label in ROWS.items():
                load = run.loads[key]
                result.rows.append(
                    load_row(
                        self.name,
                        f"{run.server}: {label}",
                        load,
                        constant=constant,
                        connections=CONNECTIONS,
                        note=cpu_note(load.cpu, _CPU_LABELS),
                    )
                )
            verdict = _verdicts(run)
            result.meta[f"targets_{run.server}"] = verdict
            lines.append(
                f"{run.server}: (d)/(b) = {verdict['hit_over_redis']:.2f} (>= {TARGET_HIT}), "
                f"p99(d)/p99(b) = {verdict['hit_p99_over_redis_p99']:.2f} (<= {TARGET_HIT_P99}): "
                f"{'met' if verdict['hit_met'] else 'NOT met'}; (e)/(c) = "
                f"{verdict['miss_over_pg']:.2f} (>= {TARGET_MISS}; vs the first start's (c): "
                f"{verdict['miss_over_pg_first_server']:.2f}): "
                f"{'met' if verdict['miss_met'] else 'NOT met'}; no cache at all: (e')/(c) = "
                f"{verdict['miss_none_over_pg']:.2f}; near-cache off: (d')/(b) = "
                f"{verdict['redis_hit_over_redis']:.2f}; stretch (d)/(a) = "
                f"{verdict['hit_over_constant']:.2f} (>= 0.5)"
            )
            errors = {k: v.errors for k, v in run.loads.items() if any(v.errors.values())}
            if errors:
                result.notes.append(
                    (f"{run.server}: errors during load (wrk counts)", repr(errors))
                )
            result.meta[f"errors_{run.server}"] = errors
        faster = {
            key: max(runs, key=lambda r: r.loads[key].requests_per_s).server
            for key in ("constant", "hit", "miss")
        }
        result.meta["faster"] = faster
        lines.append(
            "faster server per row: "
            + ", ".join(f"{key} {server}" for key, server in faster.items())
        )
        result.notes.append(("Cache ratios and targets (ratio column: to (a) of the same server)",
                             "\n".join(lines)))  # fmt: skip
        return result

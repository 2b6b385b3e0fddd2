"""The live-status and webhook benchmark (section `live`), each figure beside an anchor
measured in the same run, windows alternating:

(a) a job's result committed -> its SSE event received by a client of *another* API
    instance: two `stockroom serve` (A and B) on one PostgreSQL database and Redis db 15,
    a GET /events client on B, 100 jobs/s committed by a worker-like process
    (`benchmarks/live_latency.py`, `benchmarks/live_publisher.py`). Anchor: a bare redis-py
    PUBLISH -> SUBSCRIBE at the same rate, between the same two processes.
(b) 1,000 idle GET /events streams on instance A, each a user of its own: A's RSS growth per
    stream (anchor: B's per idle keep-alive connection), and the cached GET /products/{id}
    under wrk (16 connections) with the streams open against the same row without them
    (`benchmarks/live_streams.py`).
(c) webhook deliveries per second through `WebhookSender` against a bare
    `aiohttp.ClientSession` posting the same body to the same local receiver, 8 at a time
    (`benchmarks/live_webhooks.py`).

Targets: (a) p99 < 100 ms; (b) < 50 KB per stream, p99 with them within 10 % of without;
(c) sender >= 0.5 x bare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import httpx

from benchmarks import RESULTS_DIR, Options, SectionResult
from benchmarks import live_latency as latency
from benchmarks import live_streams as streams
from benchmarks import live_webhooks as webhooks
from benchmarks.live_report import Figures, report, warnings_in
from benchmarks.load import Wrk, busy_cores, pids_named, process_tree
from benchmarks.seed import recreate_database
from benchmarks.servers import free_port, production_env, serving
from benchmarks.system import clear_redis_prefix, rabbitmq_vhost
from stockroom.domain.users import hash_token, new_token_secret

DB_NAME = "stockroom_bench_live"
DSN = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
DATABASE_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB_NAME}"
VHOST = "stockroom_bench_live"
BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
REDIS_URL = "redis://127.0.0.1:6379/15"  # db 15 only, and only keys under KEY_PREFIX
KEY_PREFIX = "bench-live:"
MEDIA_DIR = RESULTS_DIR / "live-media"
RATE = 100.0  # committed jobs (and bare messages) per second
IDLE_STREAMS = 1000
PRODUCTS = 1000
# wrk's connections in (b). Not 32 as in `api`: a granian worker serves at most `backlog`
# (1,024) connections at once, and each open stream holds one (docs/performance.md).
CONNECTIONS = 16
WEBHOOK_CONCURRENCY = 8


class LiveBenchError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Sizes:
    events: int  # per latency window
    warm: int  # unmeasured events before each latency window
    rounds: int  # windows of each kind, in (a), (b) and (c)
    wrk_seconds: float
    wrk_warmup: float
    deliveries: int  # per webhook window


FULL = Sizes(events=1000, warm=50, rounds=3, wrk_seconds=10, wrk_warmup=2, deliveries=6000)
QUICK = Sizes(events=200, warm=20, rounds=2, wrk_seconds=3, wrk_warmup=1, deliveries=1000)


def environment() -> dict[str, str]:
    env = production_env()
    env.update(
        STOCKROOM_DATABASE_URL=DATABASE_URL,
        STOCKROOM_BROKER_URL=BROKER_URL,
        STOCKROOM_CACHE_URL=REDIS_URL,  # live events go through the cache's Redis
        STOCKROOM_CACHE_KEY_PREFIX=KEY_PREFIX,
        STOCKROOM_STORAGE_URL=f"file://{MEDIA_DIR.resolve()}",
        # As the e2e tests do: on a busy shared machine a Redis reply can stall past the
        # 0.25 s default, and each such stall would open the cache's breaker for 5 s.
        STOCKROOM_CACHE_SOCKET_TIMEOUT_SECONDS="1",
    )
    return env


def api_log(name: str) -> Path:
    return RESULTS_DIR / f"live-api-{name}.log"


@contextlib.asynccontextmanager
async def api(name: str, env: dict[str, str]) -> AsyncIterator[tuple[str, int]]:
    """`stockroom serve` until the block ends: (base URL, pid)."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "stockroom"), "serve",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    async with serving(command, env, api_log(name), port) as (base_url, process):
        yield base_url, process.pid


def cli_user(env: dict[str, str], email: str) -> tuple[int, str]:
    """A user and their first token, made by `stockroom users create --json`."""
    command = [str(Path(sys.executable).parent / "stockroom"), "users", "create",
               "--email", email, "--json"]  # fmt: skip
    created = subprocess.run(command, env=env, capture_output=True, check=True, timeout=60)
    out = json.loads(created.stdout)
    return int(out["id"]), str(out["token"])


async def idle_users(count: int) -> list[str]:
    """`count` users with a token each (their secrets), in one transaction."""
    tokens = [new_token_secret() for _ in range(count)]
    conn = await asyncpg.connect(DSN)
    try:
        async with conn.transaction():
            rows = await conn.fetch(
                "INSERT INTO users (email, name, is_admin, created_at)"
                " SELECT 'idle-' || g || '@bench.local', 'Idle stream ' || g, false, now()"
                " FROM generate_series(1, $1) AS g RETURNING id",
                count,
            )
            await conn.execute(
                "INSERT INTO api_tokens (user_id, token_hash, name, created_at)"
                " SELECT u, h, 'bench', now() FROM unnest($1::bigint[], $2::text[]) AS t(u, h)",
                [row["id"] for row in rows],
                [hash_token(token) for token in tokens],
            )
    finally:
        await conn.close()
    return tokens


async def cached_products(base_url: str, token: str, count: int) -> tuple[int, int]:
    """POST `count` products, GET each once (filling the caches); their id range."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        ids: list[int] = []
        for start in range(0, count, 8):
            batch = range(start, min(count, start + 8))
            posted = await asyncio.gather(*(http.post("/products", json={
                "product_name": f"Live bench lamp {n}", "product_price": "19.90",
                "product_images": []}) for n in batch))  # fmt: skip
            for response in posted:
                if response.status_code != 201:
                    raise LiveBenchError(f"POST /products: {response.status_code} {response.text}")
                ids.append(response.json()["id"])
        first, last = min(ids), max(ids)
        if last - first + 1 != count:
            raise LiveBenchError(f"product ids {first}..{last} are not {count} in a row")
        for start in range(first, last + 1, 32):
            got = await asyncio.gather(
                *(http.get(f"/products/{i}") for i in range(start, min(last + 1, start + 32)))
            )
            if any(response.status_code != 200 for response in got):
                raise LiveBenchError(f"GET /products: {[r.status_code for r in got]}")
        for _ in range(50):  # a stalled Redis opens the cache's breaker for a while
            x_cache = (await http.get(f"/products/{first}")).headers.get("X-Cache")
            if x_cache == "HIT":
                break
            await asyncio.sleep(0.2)
        else:
            raise LiveBenchError(f"expected X-Cache: HIT after priming, got {x_cache}")
    return first, last


def _log(text: str) -> None:
    print(f"[live] {text}", file=sys.stderr)


class LiveBenchmark:
    name = "live"
    title = "Live status (GET /events) and webhooks vs bare Redis / bare aiohttp"

    async def run(self, options: Options) -> SectionResult:
        sizes = QUICK if options.quick else FULL
        result = SectionResult(self.name, self.title)
        # 1,000 streams are 1,000 sockets here and in the server, which inherits the limit.
        result.meta["open_files_limit"] = streams.raise_open_files_limit(4 * IDLE_STREAMS)
        result.meta["sizes"] = asdict(sizes)
        _log(f"database {DB_NAME}, vhost {VHOST}, Redis db 15 keys {KEY_PREFIX}*")
        from stockroom.db.migrate import upgrade

        await recreate_database(DB_NAME)
        await asyncio.to_thread(upgrade, DATABASE_URL)
        if MEDIA_DIR.exists():
            shutil.rmtree(MEDIA_DIR)
        MEDIA_DIR.mkdir(parents=True)
        env = environment()
        with rabbitmq_vhost(VHOST):
            await asyncio.to_thread(clear_redis_prefix, KEY_PREFIX)
            try:
                figures = await self._measure(env, sizes, result)
            finally:
                await asyncio.to_thread(clear_redis_prefix, KEY_PREFIX)
        figures.warnings = warnings_in({name: api_log(name) for name in ("a", "b")})
        _log(f"(c) webhooks: {sizes.rounds} x {sizes.deliveries} deliveries of each kind")
        async with webhooks.receiver(RESULTS_DIR / "live-receiver.log") as (url, receiver):
            groups = {"bench": lambda: [os.getpid()], "receiver": lambda: [receiver.pid]}
            figures.deliveries = await webhooks.measure(
                url, groups, rounds=sizes.rounds, count=sizes.deliveries,
                concurrency=WEBHOOK_CONCURRENCY,
            )  # fmt: skip
        report(result, figures, rate=RATE, streams=IDLE_STREAMS, connections=CONNECTIONS,
               webhook_concurrency=WEBHOOK_CONCURRENCY)  # fmt: skip
        return result

    async def _measure(self, env: dict[str, str], sizes: Sizes, result: SectionResult) -> Figures:
        async with api("a", env) as (a_url, a_pid), api("b", env) as (b_url, b_pid):
            user_id, token = await asyncio.to_thread(cli_user, env, "live@bench.local")
            stream_tokens = await idle_users(IDLE_STREAMS)
            ids = await cached_products(a_url, token, PRODUCTS)
            result.meta["cpu_busy_before_load"] = background = await busy_cores()
            _log(f"machine busy {background:.0f} % of a core before loading")
            figures = Figures()
            channel = f"{KEY_PREFIX}bare-anchor"
            publisher_env = {**env, "BENCH_LIVE_USER_ID": str(user_id),
                             "BENCH_LIVE_CHANNEL": channel}  # fmt: skip
            groups = {
                "api_b": lambda: process_tree(b_pid),
                "api_a": lambda: process_tree(a_pid),
                "postgres": lambda: pids_named("postgres"),
                "redis": lambda: pids_named("redis-server"),
                "bench": lambda: [os.getpid()],
            }
            async with latency.listening(f"{b_url}/events", token, REDIS_URL, channel) as arrivals:
                for _ in range(sizes.rounds):
                    for kind in latency.KINDS:
                        _log(f"(a) {kind}: {sizes.events} events at {RATE:.0f}/s")
                        figures.latency.append(
                            await latency.window(
                                kind, count=sizes.events, warm=sizes.warm, rate=RATE,
                                env=publisher_env, arrivals=arrivals, groups=groups,
                                log=RESULTS_DIR / "live-publisher.log",
                            )
                        )  # fmt: skip
            _log(f"(b) anchor: {IDLE_STREAMS:,} idle keep-alive connections on B")
            figures.keepalive_kb = await streams.keepalive_kb(
                b_url, lambda: process_tree(b_pid), IDLE_STREAMS
            )
            _log(f"(b) {IDLE_STREAMS:,} idle streams on A: {sizes.rounds} x (without, with)")
            wrk = Wrk(a_url, {
                "server": lambda: process_tree(a_pid),
                "postgres": lambda: pids_named("postgres"),
                "redis": lambda: pids_named("redis-server"),
            })  # fmt: skip
            try:
                figures.streams = await streams.measure(
                    wrk, a_url, lambda: process_tree(a_pid), token=token,
                    stream_tokens=stream_tokens, ids=ids, rounds=sizes.rounds,
                    seconds=sizes.wrk_seconds, warmup=sizes.wrk_warmup, connections=CONNECTIONS,
                )  # fmt: skip
            finally:
                wrk.close()
        return figures

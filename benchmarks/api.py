"""The API benchmark: the real server (`stockroom serve`) on PostgreSQL, driven by wrk.

Rows: a constant endpoint (GET /health) as the yardstick of the same server in the same
run, POST /products, GET /products/{id} and the filtered list
GET /products?name=<word>&min_price=<x> (with 32 connections, and with 1 connection to
show the service time without queueing), each with req/s, p50/p99 and the ratio of its
req/s to the constant endpoint's. After the load, the list query is captured exactly as
the app sends it and explained (EXPLAIN (ANALYZE, BUFFERS)), as a custom and as a
generic (prepared) plan, and timed per word at the SQL level.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from benchmarks import RESULTS_DIR, Options, SectionResult
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
from benchmarks.servers import ServerError, free_port, production_env, serving

# Substrings a shopper types: each matches a few percent of names (see seed.py).
COMMON_WORDS = [
    "lamp", "chair", "table", "kettle", "rug", "mirror", "walnut", "leather", "vintage",
    "wireless",
]  # fmt: skip
RARE_WORD = "aurora"  # the "Aurora Edition" suffix: about 0.2 % of names
MIN_PRICES = ["10", "50", "100", "250", "500"]
CONNECTIONS = 32
LIST_LIMIT = 20  # the API default; the app asks the database for LIMIT 21


@contextlib.asynccontextmanager
async def running_server(log_path: Path) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`stockroom serve` against the benchmark database; always stopped on exit."""
    port = free_port()
    binary = Path(sys.executable).parent / "stockroom"
    command = [str(binary), "serve", "--host", "127.0.0.1", "--port", str(port)]
    async with serving(
        command, production_env(STOCKROOM_CACHE_URL="none://"), log_path, port
    ) as running:
        yield running


async def _smoke(base_url: str, token: str, product_id: int) -> dict[str, Any]:
    """One request of each kind before loading, so a 401/404/422 fails loudly, not as
    thousands of fast error responses counted as throughput."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        got = await client.get(f"/products/{product_id}")
        listed = await client.get("/products", params={"name": "lamp", "min_price": "100"})
        for response in (got, listed):
            if response.status_code != 200:
                raise ServerError(f"{response.request.url}: {response.status_code} {response.text}")
        items = listed.json()["items"]
        if not items or any("lamp" not in item["product_name"].lower() for item in items):
            raise ServerError(f"the filtered list looks wrong: {items[:2]}")
        return {"x_cache": got.headers.get("X-Cache"), "list_items": len(items)}


class ApiBenchmark:
    name = "api"
    title = "API on PostgreSQL (stockroom serve, one process, wrk, 32 connections)"

    async def run(self, options: Options) -> SectionResult:
        seconds = 3.0 if options.quick else 10.0
        warmup = 1.0 if options.quick else 2.0
        plan = seeding.SeedPlan.for_mode(options.quick)
        print(
            f"[api] seeding {plan.total_products:,} products "
            f"({plan.user_products:,} for the benchmark user)...",
            file=sys.stderr,
        )
        seeded = await seeding.prepare(plan, options.experiments)
        print(f"[api] seeded in {seeded.seconds:.1f} s", file=sys.stderr)
        first, last, step = seeded.user_product_ids
        result = SectionResult(self.name, self.title)
        if options.experiments:
            result.title += f" with {', '.join(options.experiments)}"
        result.meta["cpu_busy_before_load"] = background = await busy_cores()
        if background > 25:
            print(
                f"[api] warning: {background:.0f} % of a core was busy before the load "
                "started; other processes will skew the numbers",
                file=sys.stderr,
            )
        result.meta["seed"] = {
            "total_products": plan.total_products,
            "user_products": plan.user_products,
            "users": plan.users,
            "seconds": round(seeded.seconds, 1),
            "products_table_mb": round(seeded.table_mb, 1),
            "index_mb": seeded.index_mb,
        }
        loads: dict[str, LoadResult] = {}
        async with running_server(RESULTS_DIR / "server-api.log") as (base_url, server):
            result.meta["smoke"] = await _smoke(base_url, seeded.token, first)
            cpu_groups = {
                "server": lambda: process_tree(server.pid),
                "postgres": lambda: pids_named("postgres"),
            }
            wrk = Wrk(base_url, cpu_groups)
            try:
                words = ",".join(COMMON_WORDS)
                prices = ",".join(MIN_PRICES)
                run = _runner(wrk, seeded.token, seconds, warmup)
                loads["health"] = await run("constant", "/health", "static", ())
                loads["get"] = await run(
                    "get", "/products/1", "ids", (str(first), str(last), str(step))
                )
                loads["list"] = await run("list", "/products", "list", (words, prices))
                loads["list_rare"] = await run(
                    "list_rare", "/products", "list", (RARE_WORD, prices)
                )
                loads["list_1"] = await run("list_1", "/products", "list", (words, prices), 1)
                loads["post"] = await run("post", "/products", "post", (words,))
            finally:
                wrk.close()
        constant = loads["health"].requests_per_s
        labels = {
            "health": ("GET /health (constant)", CONNECTIONS),
            "post": ("POST /products", CONNECTIONS),
            "get": ("GET /products/{id}", CONNECTIONS),
            "list": ("GET /products?name=<word>&min_price=<x>", CONNECTIONS),
            "list_rare": (f"GET /products?name={RARE_WORD}&min_price=<x> (0.2 %)", CONNECTIONS),
            "list_1": ("GET /products?name=<word>&min_price=<x>", 1),
        }
        for key, (label, connections) in labels.items():
            load = loads[key]
            result.rows.append(
                load_row(
                    self.name,
                    f"{label} [{connections} conn]",
                    load,
                    constant=constant,
                    connections=connections,
                    note=cpu_note(load.cpu, _CPU_LABELS),
                )
            )
        errors = {k: v.errors for k, v in loads.items() if any(v.errors.values())}
        if errors:
            result.notes.append(("Errors during load (wrk counts)", repr(errors)))
        result.meta["errors"] = errors
        await _explain(result, plan, seconds)
        return result


_CPU_LABELS = {"server": "srv", "wrk": "wrk", "postgres": "pg"}


def _runner(wrk: Wrk, token: str, seconds: float, warmup: float) -> Any:
    async def run(
        key: str, path: str, mode: str, args: Sequence[str], connections: int = CONNECTIONS
    ) -> LoadResult:
        print(f"[api] {key}: {connections} connections, {seconds:.0f} s", file=sys.stderr)
        return await wrk.run(
            path,
            mode,
            args,
            token=None if mode == "static" else token,
            connections=connections,
            seconds=seconds,
            warmup_seconds=warmup,
        )

    return run


# --- the list query, as the app sends it --------------------------------------------------


async def capture_list_sql(word: str, min_price: Decimal) -> tuple[str, list[Any]]:
    """Run the app's own repository code once and capture the SQL and parameters that
    SQLAlchemy hands to asyncpg (so the plan is the plan of the real statement)."""
    from sqlalchemy import event

    from stockroom.db.engine import create_engine
    from stockroom.db.products import SqlProductRepository
    from stockroom.domain.queries import ProductQuery

    captured: list[tuple[str, Any]] = []
    engine = create_engine(seeding.BENCH_URL, pool_size=1)

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM products" in statement and "ORDER BY" in statement:
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with engine.connect() as conn:
            query = ProductQuery(
                owner_id=seeding.BENCH_USER_ID,
                min_price=min_price,
                name=word,
                limit=LIST_LIMIT + 1,
            )
            await SqlProductRepository(conn).search(query)
    finally:
        await engine.dispose()
    statement, parameters = captured[0]
    return statement, list(parameters)


async def _explain(result: SectionResult, plan: seeding.SeedPlan, seconds: float) -> None:
    statement, parameters = await capture_list_sql("lamp", Decimal("100"))
    result.meta["list_sql"] = {"statement": statement, "parameters": [str(p) for p in parameters]}
    conn = await asyncpg.connect(seeding.BENCH_DSN)
    try:
        explain = "EXPLAIN (ANALYZE, BUFFERS) "
        custom = await conn.fetch(explain + statement, *parameters)
        custom_text = "\n".join(r[0] for r in custom)
        # The plan cache of a prepared statement (asyncpg prepares every statement, and
        # SQLAlchemy keeps them per connection) switches to a generic plan after five
        # executions when it does not look costlier: show that plan too.
        await conn.execute(f"PREPARE list_products AS {statement}")
        # EXECUTE takes no protocol parameters: pass the values as quoted literals.
        quoted = [await conn.fetchval("SELECT quote_literal($1::text)", str(v)) for v in parameters]

        def execute(word: str) -> str:
            values = [*quoted[:2], word_literals[word], *quoted[3:]]
            return f"EXECUTE list_products ({', '.join(values)})"

        word_literals = {w: f"'{w}'" for w in [*COMMON_WORDS, RARE_WORD]}
        word_literals[parameters[2]] = quoted[2]
        for word in COMMON_WORDS[:6]:
            await conn.fetch(execute(word))
        cached = await conn.fetch(explain + execute(parameters[2]))
        cached_text = "\n".join(r[0] for r in cached)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        generic = await conn.fetch(explain + execute(parameters[2]))
        generic_text = "\n".join(r[0] for r in generic)
        await conn.execute("RESET plan_cache_mode")
        timings = await _time_words(conn, statement, parameters)
    finally:
        await conn.close()
    indexes = sorted({ix for text in (custom_text, cached_text) for ix in _indexes_in(text)})
    result.meta["explain"] = {
        "custom": custom_text,
        "after_6_executions": cached_text,
        "forced_generic": generic_text,
        "indexes_used": indexes,
        "sql_timings_ms": timings,
    }
    result.notes.append(("List query as SQLAlchemy renders it", statement))
    result.notes.append(
        ("EXPLAIN (ANALYZE, BUFFERS), name=lamp, min_price=100 (custom plan)", custom_text)
    )
    result.notes.append(
        (
            "Same, prepared, after 6 executions with other words (the plan cache may or may"
            " not have switched to the generic plan yet: it depends on the history)",
            cached_text,
        )
    )
    result.notes.append(("Same, generic plan (plan_cache_mode = force_generic_plan)", generic_text))
    lines = [
        f"{word:>10}: p50 {t['p50_ms']:.2f} ms  p99 {t['p99_ms']:.2f} ms  "
        f"max {t['max_ms']:.2f} ms  (rows matching for the user: {t['matching']})"
        for word, t in timings.items()
    ]
    result.notes.append(("SQL-only latency per word (1 connection, all min_price levels)",
                         "\n".join(lines)))  # fmt: skip


def _indexes_in(plan_text: str) -> list[str]:
    found = []
    for line in plan_text.splitlines():
        if " on ix_" in line or " on pk_" in line:
            found.append(line.split(" on ")[1].split()[0])
    return found


async def _time_words(
    conn: asyncpg.Connection, statement: str, parameters: list[Any], rounds: int = 20
) -> dict[str, dict[str, float]]:
    """Per word, the statement's latency through one asyncpg prepared statement (as the
    app runs it), over every min_price level, `rounds` times each."""
    prepared = await conn.prepare(statement)
    out: dict[str, dict[str, float]] = {}
    for word in [*COMMON_WORDS, RARE_WORD]:
        samples = []
        for _ in range(rounds):
            for price in MIN_PRICES:
                started = time.perf_counter()
                await prepared.fetch(parameters[0], Decimal(price), word, parameters[3])
                samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        matching = await conn.fetchval(
            "SELECT count(*) FROM products WHERE user_id = $1 AND product_name ILIKE $2",
            parameters[0],
            f"%{word}%",
        )
        out[word] = {
            "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
            "max_ms": round(samples[-1], 2),
            "matching": int(matching),
        }
    return out

"""The cache benchmark's server: the real Stockroom app plus anchor endpoints, in one process.

`create_app()` is an ASGI factory (`uvicorn --factory`, `granian --factory`). Requests
under `/_bench/` go to a small FastAPI app of yardsticks; everything else, and the
lifespan, to `stockroom.app.create_app()` with its settings from the environment. The
anchors never exist in the served API: they live here, in the benchmark.

* `/_bench/constant`: the same bytes every time, no I/O;
* `/_bench/redis-get`: one `await redis.get(key)`, returns the bytes;
* `/_bench/pg-select`: one asyncpg primary-key select of a random benchmark product.

Configuration (environment): `BENCH_ANCHOR_REDIS_URL`, `BENCH_ANCHOR_REDIS_KEY`,
`BENCH_ANCHOR_PG_DSN`, `BENCH_ANCHOR_IDS` ("first,last,step" of the product ids).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Response
from redis.asyncio import Redis

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFIX = "/_bench/"
CONSTANT = orjson.dumps({"product_name": "Constant bytes", "product_price": "10.00"})
PRODUCT_SQL = (
    "SELECT id, user_id, sku, product_name, product_description, product_price, created_at,"
    " updated_at FROM products WHERE id = $1"
)
JSON = "application/json"


class Anchors:
    """The anchors' clients, created on first use in the server's event loop."""

    def __init__(self, redis_url: str, redis_key: str, pg_dsn: str, pool_size: int) -> None:
        self.redis_url = redis_url
        self.redis_key = redis_key
        self.pg_dsn = pg_dsn
        self.pool_size = pool_size
        self._redis: Redis | None = None
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(self.redis_url)
        return self._redis

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.pg_dsn, min_size=self.pool_size, max_size=self.pool_size
                    )
        return self._pool

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()


def anchor_routes(anchors: Anchors, ids: range) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get(PREFIX + "constant")
    async def constant() -> Response:
        return Response(CONSTANT, media_type=JSON)

    @app.get(PREFIX + "redis-get")
    async def redis_get() -> Response:
        body = await anchors.redis().get(anchors.redis_key)
        return Response(body or b"", media_type=JSON)

    @app.get(PREFIX + "pg-select")
    async def pg_select() -> Response:
        pool = await anchors.pool()
        row = await pool.fetchrow(PRODUCT_SQL, random.choice(ids))
        return Response(orjson.dumps(dict(row), default=str), media_type=JSON)

    return app


class BenchDispatcher:
    """`/_bench/*` to the anchors, the rest (and the lifespan) to Stockroom."""

    def __init__(self, stockroom: ASGIApp, anchors_app: ASGIApp, anchors: Anchors) -> None:
        self.stockroom = stockroom
        self.anchors_app = anchors_app
        self.anchors = anchors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":

            async def send_closing_anchors(message: Message) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    await self.anchors.close()
                await send(message)

            await self.stockroom(scope, receive, send_closing_anchors)
        elif scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await self.anchors_app(scope, receive, send)
        else:
            await self.stockroom(scope, receive, send)


def create_app() -> BenchDispatcher:
    from stockroom.app import create_app as create_stockroom
    from stockroom.config import get_settings

    settings = get_settings()
    first, last, step = (int(v) for v in os.environ.get("BENCH_ANCHOR_IDS", "1,1,1").split(","))
    anchors = Anchors(
        redis_url=os.environ.get("BENCH_ANCHOR_REDIS_URL", "redis://127.0.0.1:6379/15"),
        redis_key=os.environ.get("BENCH_ANCHOR_REDIS_KEY", "stockroom-bench:anchor"),
        pg_dsn=os.environ["BENCH_ANCHOR_PG_DSN"],
        pool_size=settings.database_pool_size,
    )
    ids = range(first, last + 1, step)
    return BenchDispatcher(create_stockroom(settings), anchor_routes(anchors, ids), anchors)

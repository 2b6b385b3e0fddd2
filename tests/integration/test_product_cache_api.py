"""GET /products/{id} through the cache, on the in-process cache and on real Redis:
hits, authorisation on a hit, the delete/set race, tokens, and query counts."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from tests.conftest import Account, make_account
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import RABBITMQ_URL, REDIS_URL
from tests.support.settings import make_settings

from stockroom.app import create_app
from stockroom.config import Settings
from stockroom.domain.ports import CachedProduct, Lookups, ProductCache
from stockroom.services import Services

_COUNTED: contextvars.ContextVar[bool] = contextvars.ContextVar("counted", default=False)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def cache_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "redis":
        require_redis()
        yield REDIS_URL
    else:
        yield "memory://"


@pytest.fixture
async def settings(database_url: str, cache_url: str, tmp_path: Path) -> AsyncIterator[Settings]:
    prefix = unique_prefix()
    yield make_settings(
        database_url,
        tmp_path / "media",
        cache_url=cache_url,
        cache_key_prefix=prefix,
    )
    if cache_url.startswith("redis"):
        client = require_redis()
        await delete_prefix(client, prefix)
        await client.aclose()


class QueryCounter:
    """What this test's requests ask of the database from here on: the calls into the read
    lookups (asyncpg on PostgreSQL, the engine on SQLite) and the statements on the engine.

    The app's own chores (the import-completion sweep, the outbox relay) query the same
    database on their own schedule. They hold the lookups they were built with, not the
    counting ones installed here; and their tasks, started before the counter, do not carry
    `_COUNTED`, which the requests the test makes from here on, and the tasks they start,
    inherit."""

    def __init__(self, app: FastAPI, services: Services) -> None:
        self.lookups = 0
        self.statements = 0
        _COUNTED.set(True)
        event.listen(services.engine.sync_engine, "before_cursor_execute", self._statement)
        app.state.services = dataclasses.replace(
            services, lookups=_CountedLookups(services.lookups, self)
        )

    def _statement(self, *_: Any) -> None:
        if _COUNTED.get():
            self.statements += 1

    @property
    def seen(self) -> tuple[int, int]:
        return self.lookups, self.statements


class _CountedLookups:
    def __init__(self, inner: Lookups, counter: QueryCounter) -> None:
        self._inner = inner
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self._counter.lookups += 1
            return await method(*args, **kwargs)

        return counted


async def _create(client: httpx.AsyncClient, who: Account, name: str = "Lamp") -> int:
    response = await client.post(
        "/products", json={"product_name": name, "product_price": "3"}, headers=who.headers
    )
    assert response.status_code == 201
    product_id: int = response.json()["id"]
    return product_id


async def test_second_read_is_a_hit_with_the_same_bytes_and_no_query(
    client: httpx.AsyncClient, app: FastAPI, services: Services, alice: Account
) -> None:
    product_id = await _create(client, alice)
    queries = QueryCounter(app, services)

    first = await client.get(f"/products/{product_id}", headers=alice.headers)
    after_miss = queries.seen
    second = await client.get(f"/products/{product_id}", headers=alice.headers)

    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    lookups, statements = after_miss
    assert 1 <= lookups <= 2  # the token (unless cached), then the product with its images
    assert statements <= 2  # where the engine serves them: the product, then its images
    assert queries.seen == after_miss  # a hit (token and product) touches no database


async def test_a_cached_product_is_never_served_to_another_user(
    client: httpx.AsyncClient, alice: Account, bob: Account, admin: Account
) -> None:
    product_id = await _create(client, alice)
    await client.get(f"/products/{product_id}", headers=alice.headers)

    stranger = await client.get(f"/products/{product_id}", headers=bob.headers)
    operator = await client.get(f"/products/{product_id}", headers=admin.headers)

    assert stranger.status_code == 404
    assert operator.status_code == 200
    assert operator.headers["x-cache"] == "HIT"


async def test_every_write_invalidates(client: httpx.AsyncClient, alice: Account) -> None:
    product_id = await _create(client, alice)
    url = f"/products/{product_id}"
    await client.get(url, headers=alice.headers)

    await client.patch(url, json={"product_name": "Floor lamp"}, headers=alice.headers)
    after_patch = await client.get(url, headers=alice.headers)
    await client.delete(url, headers=alice.headers)
    after_delete = await client.get(url, headers=alice.headers)

    assert after_patch.headers["x-cache"] == "MISS"
    assert after_patch.json()["product_name"] == "Floor lamp"
    assert after_delete.status_code == 404


class PausedFill:
    """Holds a reader between its database read and its cache fill, so a writer can
    commit and invalidate in between: the interleaving that re-caches stale data."""

    def __init__(self, inner: ProductCache) -> None:
        self.inner = inner
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def read(self, product_id: int) -> CachedProduct:
        return await self.inner.read(product_id)

    async def fill(self, product_id: int, body: bytes, token: str | None) -> None:
        self.reached.set()
        await self.release.wait()
        await self.inner.fill(product_id, body, token)

    async def invalidate(self, product_id: int) -> None:
        await self.inner.invalidate(product_id)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


async def test_a_read_that_loaded_the_old_row_cannot_recache_it_after_a_write(
    client: httpx.AsyncClient, app: FastAPI, services: Services, alice: Account
) -> None:
    product_id = await _create(client, alice, name="Old name")
    url = f"/products/{product_id}"
    paused = PausedFill(services.cache)
    app.state.services = dataclasses.replace(services, cache=paused)

    slow_read = asyncio.create_task(client.get(url, headers=alice.headers))
    await asyncio.wait_for(paused.reached.wait(), timeout=10)  # it holds the old row
    app.state.services = services
    patched = await client.patch(url, json={"product_name": "New name"}, headers=alice.headers)
    paused.release.set()
    stale = await slow_read

    fresh = await client.get(url, headers=alice.headers)

    assert patched.status_code == 200
    assert stale.json()["product_name"] == "Old name"  # it read before the write
    assert fresh.json()["product_name"] == "New name"  # ...but did not re-cache that


async def test_a_revoked_token_stops_working_at_once(
    client: httpx.AsyncClient, alice: Account
) -> None:
    issued = (await client.post("/me/tokens", headers=alice.headers)).json()
    extra = {"Authorization": f"Bearer {issued['token']}"}
    assert (await client.get("/me", headers=extra)).status_code == 200
    assert (await client.get("/me", headers=extra)).status_code == 200  # now cached

    revoked = await client.delete(f"/me/tokens/{issued['id']}", headers=alice.headers)

    assert revoked.status_code == 204
    assert (await client.get("/me", headers=extra)).status_code == 401
    assert (await client.get("/me", headers=alice.headers)).status_code == 200


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app.state.services


@pytest.mark.redis
async def test_with_the_product_cache_off_reads_miss_and_writes_still_invalidate(
    database_url: str, tmp_path: Path
) -> None:
    """STOCKROOM_CACHE_PRODUCTS=false on one process of a fleet sharing Redis: it always
    reads the database, and its PATCH still retires what the other process cached."""
    client = require_redis()
    prefix = unique_prefix()
    shared = {"cache_url": REDIS_URL, "cache_key_prefix": prefix}
    # The writer is an API process whose workers run elsewhere (a broker URL, which it never
    # connects to: nothing here has images): a process holds one embedded worker at most.
    writer_settings = make_settings(
        database_url, tmp_path / "m", cache_products=False, broker_url=RABBITMQ_URL, **shared
    )
    try:
        async with (
            _serving(make_settings(database_url, tmp_path / "m", **shared)) as (reader, services),
            _serving(writer_settings) as (writer, _),
        ):
            carol = await make_account(services, f"carol-{prefix}@example.com")
            product_id = await _create(writer, carol)
            url = f"/products/{product_id}"
            await reader.get(url, headers=carol.headers)
            assert (await reader.get(url, headers=carol.headers)).headers["x-cache"] == "HIT"

            uncached = [await writer.get(url, headers=carol.headers) for _ in range(2)]
            patched = await writer.patch(
                url, json={"product_name": "Renamed"}, headers=carol.headers
            )
            after = await reader.get(url, headers=carol.headers)

        assert [r.headers["x-cache"] for r in uncached] == ["MISS", "MISS"]
        assert patched.status_code == 200
        assert after.headers["x-cache"] == "MISS"
        assert after.json()["product_name"] == "Renamed"
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()

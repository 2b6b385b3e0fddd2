"""Redis failing never fails a request: the app reaches Redis through a TCP proxy that we
switch to refusing connections, or to a blackhole that accepts and never answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import Account
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.settings import make_settings
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

from stockroom.config import Settings

pytestmark = pytest.mark.redis
SOCKET_TIMEOUT = 0.5


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    require_redis()
    async with TcpProxy("127.0.0.1", 6379) as running:
        yield running


@pytest.fixture
async def settings(database_url: str, proxy: TcpProxy, tmp_path: Path) -> AsyncIterator[Settings]:
    prefix = unique_prefix()
    yield make_settings(
        database_url,
        tmp_path / "media",
        cache_url=f"redis://127.0.0.1:{proxy.port}/0",
        cache_key_prefix=prefix,
        cache_socket_timeout_seconds=SOCKET_TIMEOUT,
        cache_breaker_cooldown_seconds=3.0,  # longer than the 20 requests below take
        log_level="ERROR",
    )
    client = require_redis()
    await delete_prefix(client, prefix)
    await client.aclose()


@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
async def test_reads_and_writes_keep_answering_and_nothing_stale_is_served_after(
    client: httpx.AsyncClient, alice: Account, proxy: TcpProxy, outage: str
) -> None:
    created = await client.post(
        "/products", json={"product_name": "Old", "product_price": "3"}, headers=alice.headers
    )
    url = f"/products/{created.json()['id']}"
    await client.get(url, headers=alice.headers)
    assert (await client.get(url, headers=alice.headers)).headers["x-cache"] == "HIT"

    proxy.set_mode(outage)  # type: ignore[arg-type]
    slow = 0
    statuses = []
    for attempt in range(20):
        started = time.monotonic()
        if attempt == 10:
            response = await client.patch(url, json={"product_name": "New"}, headers=alice.headers)
        else:
            response = await client.get(url, headers=alice.headers)
        statuses.append(response.status_code)
        slow += time.monotonic() - started > SOCKET_TIMEOUT * 0.9
    during = await client.get(url, headers=alice.headers)
    metrics = (await client.get("/metrics")).text

    assert set(statuses) == {200}
    assert during.json()["product_name"] == "New"  # from the database
    assert during.headers["x-cache"] == "MISS"
    # The breaker opens at the first failure: one timeout per cache (tokens, products),
    # not one per request.
    assert slow <= 2, f"{slow} of 20 requests waited for a dead Redis"
    assert "stockroom_cache_errors_total" in metrics

    proxy.set_mode("forward")

    async def cached_again() -> bool:
        response = await client.get(url, headers=alice.headers)
        assert response.json()["product_name"] == "New"  # never the entry cached before
        return response.headers["x-cache"] == "HIT"

    await eventually(cached_again, timeout=15, interval=0.1)

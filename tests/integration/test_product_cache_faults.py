"""The Redis cache under faults, through a TCP proxy: it degrades to misses, never raises, costs
one socket timeout per outage (circuit breaker), and serves nothing stale after recovery.

The cooldowns run on a fake clock the tests advance (`FakeClock`); only the sockets' timeouts
are real."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import structlog
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import REDIS_URL
from tests.support.tcp_proxy import Mode, TcpProxy
from tests.support.waiting import eventually

from stockroom.adapters.cache import CacheOptions, RedisCache
from stockroom.domain.errors import CacheUnavailable
from stockroom.domain.ports import CachedProduct

pytestmark = pytest.mark.redis

SOCKET_TIMEOUT = 0.2
COOLDOWN = 0.3
TTL_SECONDS = 60


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class FakeClock:
    """The breaker's clock and the repair loop's sleep: time passes only on `advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self._moved = asyncio.Event()
        self._asleep = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self.now < until:
            self._asleep.set()
            await self._moved.wait()

    async def advance_once_asleep(self, seconds: float) -> None:
        """Advance once a task sleeps on this clock (the repair loop between tries)."""
        async with asyncio.timeout(5):
            await self._asleep.wait()
        self._asleep.clear()
        self.advance(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = require_redis()
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
async def proxy(redis_client: Redis, prefix: str) -> AsyncIterator[TcpProxy]:
    target = urlsplit(REDIS_URL)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as running:
        yield running
    await delete_prefix(redis_client, prefix)


def adapter(url: str, prefix: str, clock: FakeClock | None = None) -> RedisCache:
    options = CacheOptions(
        ttl_seconds=TTL_SECONDS,
        socket_timeout=SOCKET_TIMEOUT,
        breaker_cooldown=COOLDOWN,
        key_prefix=prefix,
    )
    if clock is not None:
        options = dataclasses.replace(options, clock=clock, sleep=clock.sleep)
    return RedisCache.from_url(url, options)


@pytest.fixture
async def cache(proxy: TcpProxy, prefix: str, clock: FakeClock) -> AsyncIterator[RedisCache]:
    """The instance under test, reaching Redis through the proxy the tests cut."""
    instance = adapter(proxy.url, prefix, clock)
    yield instance
    await instance.close()


@pytest.fixture
async def other_instance(prefix: str) -> AsyncIterator[RedisCache]:
    """Another process's instance on the same keys, reaching Redis directly."""
    instance = adapter(REDIS_URL, prefix)
    yield instance
    await instance.close()


async def cache_one(cache: RedisCache, product_id: int, body: bytes) -> None:
    await cache.fill(product_id, body, (await cache.read(product_id)).token)
    assert (await cache.read(product_id)).body == body


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
async def test_an_unreachable_redis_is_a_quick_miss_and_never_raises(
    cache: RedisCache, proxy: TcpProxy, mode: Mode
) -> None:
    await cache_one(cache, 1, b"cached")
    proxy.set_mode(mode)

    started = time.monotonic()
    assert await cache.read(1) == CachedProduct(None, None)
    assert time.monotonic() - started < 5 * SOCKET_TIMEOUT

    await cache.fill(1, b"x", "0.0")
    await cache.invalidate(1)
    assert cache.lost_invalidations == {1}
    with pytest.raises(CacheUnavailable):
        await cache.ping()


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
async def test_a_cold_client_against_a_dead_redis_degrades_too(
    cache: RedisCache, proxy: TcpProxy, mode: Mode
) -> None:
    proxy.set_mode(mode)
    assert await cache.read(1) == CachedProduct(None, None)
    await cache.fill(1, b"x", "0.0")
    await cache.invalidate(1)


async def test_an_open_breaker_costs_one_timeout_not_one_per_read(
    cache: RedisCache, proxy: TcpProxy
) -> None:
    await cache_one(cache, 1, b"cached")
    proxy.set_mode("blackhole")
    accepted = proxy.connections_accepted
    errors = metric("stockroom_cache_errors_total", operation="read")
    degraded = metric("stockroom_cache_requests_total", result="error")

    started = time.monotonic()
    for _ in range(50):
        assert (await cache.read(1)).body is None
    elapsed = time.monotonic() - started

    assert metric("stockroom_cache_errors_total", operation="read") - errors == 1
    assert metric("stockroom_cache_requests_total", result="error") - degraded == 50
    assert proxy.connections_accepted - accepted <= 1
    assert metric("stockroom_cache_breaker_open") == 1
    assert elapsed < 10 * SOCKET_TIMEOUT  # 50 timeouts would be 50 * SOCKET_TIMEOUT


async def test_caching_resumes_after_the_cooldown(
    cache: RedisCache, proxy: TcpProxy, clock: FakeClock
) -> None:
    proxy.set_mode("refuse")
    with structlog.testing.capture_logs() as logs:
        assert (await cache.read(2)).token is None
        assert (await cache.read(2)).token is None
        proxy.set_mode("forward")
        assert (await cache.read(2)).token is None  # still inside the cooldown
        clock.advance(COOLDOWN * 1.5)
        await cache_one(cache, 2, b"back")

    events = [entry["event"] for entry in logs]
    assert events == ["cache.unavailable", "cache.recovered"]
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["operation"] == "read"
    assert metric("stockroom_cache_breaker_open") == 0


async def test_an_entry_invalidated_during_the_outage_is_not_served_after_it(
    cache: RedisCache, proxy: TcpProxy, other_instance: RedisCache, clock: FakeClock
) -> None:
    await cache_one(cache, 1, b"old row")
    await cache_one(cache, 2, b"unrelated")
    assert (await other_instance.read(1)).body == b"old row"
    pending_reader = await cache.read(3)  # a read whose fill lands after the outage

    proxy.set_mode("blackhole")
    await cache.invalidate(1)  # the write committed, but Redis never heard of it
    assert cache.lost_invalidations == {1}
    with structlog.testing.capture_logs() as logs:
        proxy.set_mode("forward")
        clock.advance(COOLDOWN * 1.5)
        after = await cache.read(1)
    assert after.body is None
    assert cache.lost_invalidations == frozenset()
    assert "cache.epoch_bumped" in [entry["event"] for entry in logs]
    assert (await cache.read(2)).body is None  # the bump orphans every entry
    assert (await other_instance.read(1)).body is None  # the other instance notices
    await cache.fill(3, b"pre-outage row", pending_reader.token)
    assert (await cache.read(3)).body is None  # its token predates the bump

    await cache.fill(1, b"new row", after.token)
    assert (await cache.read(1)).body == b"new row"
    assert (await other_instance.read(1)).body == b"new row"


async def test_an_idle_instance_bumps_the_epoch_itself_once_redis_is_back(
    cache: RedisCache, proxy: TcpProxy, other_instance: RedisCache, clock: FakeClock
) -> None:
    """A worker that lost its invalidation and then has no other job must not leave the
    API serving the old body until the TTL: it repairs in the background."""
    await cache_one(other_instance, 1, b"old row")
    proxy.set_mode("blackhole")
    await cache.invalidate(1)
    assert cache.lost_invalidations == {1}
    proxy.set_mode("forward")
    await clock.advance_once_asleep(COOLDOWN * 1.5)

    async def other_sees_it_gone() -> bool:
        return (await other_instance.read(1)).body is None

    await eventually(other_sees_it_gone, timeout=5)
    assert cache.lost_invalidations == frozenset()


async def test_a_repair_that_finds_redis_still_down_tries_again(
    cache: RedisCache, proxy: TcpProxy, clock: FakeClock
) -> None:
    proxy.set_mode("refuse")
    await cache.invalidate(1)
    for _ in range(2):  # the repair's first tries fail
        tries = metric("stockroom_cache_errors_total", operation="repair")
        await clock.advance_once_asleep(COOLDOWN * 1.5)
        await eventually(functools.partial(_repair_tried, tries), timeout=5, interval=0.01)
    assert cache.lost_invalidations == {1}
    proxy.set_mode("forward")
    await clock.advance_once_asleep(COOLDOWN * 1.5)
    await eventually(lambda: _none_lost(cache), timeout=5)


async def _repair_tried(before: float) -> bool:
    return metric("stockroom_cache_errors_total", operation="repair") > before


async def _none_lost(cache: RedisCache) -> bool:
    return not cache.lost_invalidations


async def test_an_instance_with_a_stale_epoch_still_invalidates_the_live_entry(
    cache: RedisCache,
    other_instance: RedisCache,
    redis_client: Redis,
    prefix: str,
) -> None:
    await redis_client.incr(f"{prefix}epoch")  # another instance recovered and bumped the epoch
    await cache_one(cache, 1, b"row")

    await other_instance.invalidate(1)  # still believes epoch 0

    assert (await cache.read(1)).body is None

"""One contract for every `ProductCache`: the same assertions on the memory and Redis adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import REDIS_URL

from stockroom.adapters.cache import (
    CacheOptions,
    MemoryCache,
    NearCache,
    RedisCache,
    WriteOnlyCache,
    build_product_cache,
)
from stockroom.domain.ports import CachedProduct, ProductCache

TTL_SECONDS = 1
BODY = b'{"id":1,"name":"Caf\xc3\xa9 \\u00e9","price":"9.90"}\x00\xff'


@dataclass
class CacheUnderTest:
    cache: ProductCache
    advance: Callable[[float], Awaitable[None]]
    """Let `seconds` pass for the cache (a fake clock for memory, real time for Redis)."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[CacheUnderTest]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance_clock(seconds: float) -> None:
            clock.now += seconds

        cache = MemoryCache(ttl_seconds=TTL_SECONDS, max_entries=100, clock=clock)
        yield CacheUnderTest(cache, advance_clock)
        return
    admin = require_redis()
    prefix = unique_prefix()
    redis_cache = build_product_cache(
        REDIS_URL,
        CacheOptions(
            ttl_seconds=TTL_SECONDS, socket_timeout=2.0, breaker_cooldown=5.0, key_prefix=prefix
        ),
    )
    try:
        yield CacheUnderTest(redis_cache, asyncio.sleep)
    finally:
        await redis_cache.close()
        await delete_prefix(admin, prefix)
        await admin.aclose()


async def test_miss_then_fill_then_hit_returns_the_exact_bytes(subject: CacheUnderTest) -> None:
    cache = subject.cache
    miss = await cache.read(1)
    assert miss.body is None
    assert miss.token is not None

    await cache.fill(1, BODY, miss.token)

    hit = await cache.read(1)
    assert hit.body == BODY
    assert type(hit.body) is bytes


async def test_invalidate_removes_the_entry(subject: CacheUnderTest) -> None:
    cache = subject.cache
    await cache.fill(1, BODY, (await cache.read(1)).token)

    await cache.invalidate(1)

    assert (await cache.read(1)).body is None


async def test_a_read_from_before_an_invalidation_cannot_be_cached(
    subject: CacheUnderTest,
) -> None:
    cache = subject.cache
    stale = await cache.read(1)  # a reader loads the old row...
    await cache.invalidate(1)  # ...a writer commits and invalidates...
    await cache.fill(1, b"old row", stale.token)  # ...then the reader tries to cache it

    fresh = await cache.read(1)
    assert fresh.body is None
    await cache.fill(1, b"new row", fresh.token)
    assert (await cache.read(1)).body == b"new row"


async def test_invalidating_an_uncached_product_still_fences_pending_fills(
    subject: CacheUnderTest,
) -> None:
    cache = subject.cache
    first = await cache.read(7)
    second = await cache.read(7)
    await cache.invalidate(7)
    await cache.invalidate(7)
    await cache.fill(7, b"a", first.token)
    await cache.fill(7, b"b", second.token)
    assert (await cache.read(7)).body is None


async def test_a_fill_without_a_token_stores_nothing(subject: CacheUnderTest) -> None:
    await subject.cache.fill(1, BODY, None)
    assert (await subject.cache.read(1)).body is None


async def test_entries_expire_after_the_ttl(subject: CacheUnderTest) -> None:
    cache = subject.cache
    await cache.fill(1, BODY, (await cache.read(1)).token)
    assert (await cache.read(1)).body == BODY

    await subject.advance(TTL_SECONDS + 0.2)

    expired = await cache.read(1)
    assert expired.body is None
    await cache.fill(1, b"refilled", expired.token)
    assert (await cache.read(1)).body == b"refilled"


async def test_a_hit_never_crosses_products(subject: CacheUnderTest) -> None:
    cache = subject.cache
    tokens = {pid: (await cache.read(pid)).token for pid in (1, 2, 10, 11)}
    for pid, token in tokens.items():
        await cache.fill(pid, f"product {pid}".encode(), token)

    await cache.invalidate(1)

    assert (await cache.read(1)).body is None
    for pid in (2, 10, 11):
        assert (await cache.read(pid)).body == f"product {pid}".encode()


async def test_ping_and_close(subject: CacheUnderTest) -> None:
    """An open cache answers `ping`; `close` lets go of what it holds: the memory cache its
    entries, the Redis cache its connections. (A Redis cache used after `close` connects
    again, so "closed" shows in the sockets, not in a failing call.)"""
    import os
    from pathlib import Path
    from urllib.parse import urlsplit

    def connections_to(port: int) -> int:
        """This process's established TCP connections to `port` (Linux: /proc)."""
        ours = set()
        for fd in Path("/proc/self/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed while listing
                continue
            if target.startswith("socket:["):
                ours.add(target.removeprefix("socket:[").removesuffix("]"))
        count = 0
        for table in (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6")):
            for line in table.read_text().splitlines()[1:]:
                _, _, remote, state, *rest = line.split()
                if int(remote.rsplit(":", 1)[1], 16) == port and state == "01" and rest[5] in ours:
                    count += 1
        return count

    cache = subject.cache
    redis_port = urlsplit(REDIS_URL).port or 6379
    before = connections_to(redis_port)  # a cache connects on its first call, not when built
    await cache.fill(1, BODY, (await cache.read(1)).token)
    await cache.ping()
    assert (await cache.read(1)).body == BODY
    used = connections_to(redis_port)

    await cache.close()

    if isinstance(cache, MemoryCache):
        assert (await cache.read(1)).body is None
    else:
        assert used > before
        assert connections_to(redis_port) == before


def test_memory_cache_keeps_at_most_max_entries() -> None:
    async def scenario() -> list[bytes | None]:
        cache = MemoryCache(ttl_seconds=60, max_entries=2)
        for pid in (1, 2):
            await cache.fill(pid, b"x", (await cache.read(pid)).token)
        await cache.read(1)  # 1 is now the most recently used
        await cache.fill(3, b"x", (await cache.read(3)).token)
        return [(await cache.read(pid)).body for pid in (1, 2, 3)]

    assert asyncio.run(scenario()) == [b"x", None, b"x"]


async def test_memory_generations_stay_fenced_after_eviction() -> None:
    cache = MemoryCache(ttl_seconds=60, max_entries=2)
    stale = await cache.read(1)
    await cache.invalidate(1)
    await cache.invalidate(2)
    await cache.invalidate(3)  # evicts product 1's generation from the table
    await cache.fill(1, b"old row", stale.token)
    assert (await cache.read(1)).body is None


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", MemoryCache),
        ("memory://?max_entries=5", MemoryCache),
        ("none://", WriteOnlyCache),
        ("redis://127.0.0.1:6379/0", RedisCache),
        ("rediss://127.0.0.1:6380/0", RedisCache),
    ],
)
async def test_build_product_cache_chooses_by_scheme(url: str, kind: type[object]) -> None:
    options = CacheOptions(ttl_seconds=60, socket_timeout=0.1, breaker_cooldown=1.0)
    cache = build_product_cache(url, options)
    try:
        assert isinstance(cache, kind)
    finally:
        await cache.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0"])
async def test_a_near_cache_is_built_for_plain_and_tls_redis(url: str) -> None:
    """Nothing connects until the first call, so no TLS Redis is needed to build one."""
    options = CacheOptions(
        ttl_seconds=60, socket_timeout=0.1, breaker_cooldown=1.0, near_max_entries=10
    )
    cache = build_product_cache(url, options)
    try:
        assert isinstance(cache, NearCache)
    finally:
        await cache.close()


def test_build_product_cache_rejects_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="memcached"):
        build_product_cache(
            "memcached://x", CacheOptions(ttl_seconds=1, socket_timeout=1, breaker_cooldown=1)
        )


async def test_the_null_cache_never_hits() -> None:
    cache = build_product_cache(
        "none://", CacheOptions(ttl_seconds=60, socket_timeout=1, breaker_cooldown=1)
    )
    await cache.fill(1, BODY, (await cache.read(1)).token)
    await cache.invalidate(1)
    assert await cache.read(1) == CachedProduct(None, None)

"""STOCKROOM_CACHE_PRODUCTS=false: the product cache serves nothing but still invalidates;
`none://`: the same cache with nothing behind it."""

from __future__ import annotations

from stockroom.adapters.cache import CacheOptions, MemoryCache, WriteOnlyCache, build_product_cache
from stockroom.domain.ports import CachedProduct


async def _shared_with(product_id: int, body: bytes) -> MemoryCache:
    shared = MemoryCache.from_url(
        "memory://", CacheOptions(ttl_seconds=60, socket_timeout=1, breaker_cooldown=1)
    )
    entry = await shared.read(product_id)
    await shared.fill(product_id, body, entry.token)
    assert (await shared.read(product_id)).body == body
    return shared


async def test_reads_always_miss_and_nothing_is_filled() -> None:
    shared = await _shared_with(7, b"cached by another process")
    cache = WriteOnlyCache(shared)

    entry = await cache.read(7)
    await cache.fill(8, b"body", (await shared.read(8)).token)

    assert entry.body is None
    assert entry.token is None  # without a token no fill could be accepted anyway
    assert (await shared.read(8)).body is None


async def test_invalidations_reach_the_shared_cache() -> None:
    shared = await _shared_with(7, b"cached by another process")
    cache = WriteOnlyCache(shared)

    await cache.invalidate(7)

    assert (await shared.read(7)).body is None


async def test_without_a_shared_cache_nothing_is_cached_and_every_call_is_a_no_op() -> None:
    cache = WriteOnlyCache(None)

    await cache.fill(1, b"body", (await cache.read(1)).token)
    await cache.invalidate(1)
    await cache.ping()
    await cache.close()

    assert await cache.read(1) == CachedProduct(None, None)


async def test_none_url_builds_the_write_only_cache_with_nothing_behind_it() -> None:
    options = CacheOptions(ttl_seconds=60, socket_timeout=1, breaker_cooldown=1)
    cache = build_product_cache("none://", options)
    assert isinstance(cache, WriteOnlyCache)
    await cache.invalidate(1)
    assert await cache.read(1) == CachedProduct(None, None)

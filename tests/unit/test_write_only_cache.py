"""STOCKROOM_CACHE_PRODUCTS=false: the product cache serves nothing but still invalidates."""

from __future__ import annotations

from stockroom.adapters.cache import MemoryProductCache, WriteOnlyProductCache


async def _shared_with(product_id: int, body: bytes) -> MemoryProductCache:
    shared = MemoryProductCache.from_url(
        "memory://", ttl_seconds=60, socket_timeout=1, breaker_cooldown=1
    )
    entry = await shared.read(product_id)
    await shared.fill(product_id, body, entry.token)
    assert (await shared.read(product_id)).body == body
    return shared


async def test_reads_always_miss_and_nothing_is_filled() -> None:
    shared = await _shared_with(7, b"cached by another process")
    cache = WriteOnlyProductCache(shared)

    entry = await cache.read(7)
    await cache.fill(8, b"body", (await shared.read(8)).token)

    assert entry.body is None
    assert entry.token is None  # without a token no fill could be accepted anyway
    assert (await shared.read(8)).body is None


async def test_invalidations_reach_the_shared_cache() -> None:
    shared = await _shared_with(7, b"cached by another process")
    cache = WriteOnlyProductCache(shared)

    await cache.invalidate(7)

    assert (await shared.read(7)).body is None

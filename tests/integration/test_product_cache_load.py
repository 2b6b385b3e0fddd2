"""Many requests at once must not trip the cache: more concurrent reads than the Redis
client's pool holds wait for a connection instead of failing (which would open the breaker
and send every request to the database)."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import REDIS_URL

from stockroom.adapters.cache import CacheOptions, build_product_cache

pytestmark = pytest.mark.redis


async def test_three_hundred_concurrent_reads_all_hit() -> None:
    client = require_redis()
    prefix = unique_prefix()
    cache = build_product_cache(
        REDIS_URL,
        CacheOptions(ttl_seconds=60, socket_timeout=5.0, breaker_cooldown=30.0, key_prefix=prefix),
    )
    try:
        entry = await cache.read(1)
        await cache.fill(1, b"body", entry.token)

        reads = await asyncio.gather(*(cache.read(1) for _ in range(300)))

        assert [read.body for read in reads] == [b"body"] * 300
    finally:
        await cache.close()
        await delete_prefix(client, prefix)
        await client.aclose()

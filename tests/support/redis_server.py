"""The shared Redis of the integration tests: a client to it and per-test key cleanup.

The server is shared, so tests never flush it: each uses a unique key prefix and deletes its keys.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from redis.asyncio import Redis

from tests.support.services import REDIS_URL, require


def unique_prefix() -> str:
    return f"stockroom-test:{uuid.uuid4().hex}:"


def require_redis() -> Redis:
    """A client to the test Redis; skips the test if it is down, fails it when `CI=true`."""
    address = urlsplit(REDIS_URL)
    require("Redis", address.hostname or "127.0.0.1", address.port or 6379)
    return Redis.from_url(REDIS_URL, socket_timeout=2.0, socket_connect_timeout=2.0)


async def delete_prefix(client: Redis, prefix: str) -> None:
    """Delete this test's keys only (SCAN + DEL, never FLUSHDB on the shared server)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)

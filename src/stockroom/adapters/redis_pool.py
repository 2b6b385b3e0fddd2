"""The Redis connection pool every adapter on Redis uses: it fails fast, never queues up."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def fail_fast_pool(url: str, *, timeout: float, max_connections: int) -> BlockingConnectionPool:
    """A pool that connects on first use, with no retries, so one failure costs one timeout.

    Blocking: past `max_connections` calls in flight, a call waits (up to `timeout`) for a
    connection, where redis-py's default pool raises at once, and a burst of traffic would
    open the caller's breaker.
    """
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )

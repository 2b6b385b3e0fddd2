"""Rate limits counted in Redis (through redis-py), so every API process spends one budget."""

from __future__ import annotations

from typing import Any

from limits.aio.storage import RedisStorage
from limits.errors import StorageError
from redis.exceptions import RedisError

from stockroom.adapters.cache.breaker import CircuitBreaker
from stockroom.adapters.rate_limit.windows import WindowRateLimiter
from stockroom.adapters.redis_pool import fail_fast_pool

MAX_CONNECTIONS = 32  # per process; each hit holds a connection for one round trip


def redis_rate_limiter(
    url: str, *, socket_timeout: float, breaker_cooldown: float, key_prefix: str
) -> WindowRateLimiter:
    """Build the client without connecting; no retries, so one failure costs one timeout."""
    pool = fail_fast_pool(url, timeout=socket_timeout, max_connections=MAX_CONNECTIONS)
    # `limits` types its client options as scalars; a ready pool is what it passes on.
    options: dict[str, Any] = {"connection_pool": pool}
    storage = RedisStorage(
        f"async+{url}", implementation="redispy", key_prefix=key_prefix, **options
    )
    return WindowRateLimiter(
        storage,
        storage_errors=(RedisError, OSError, StorageError),
        breaker=CircuitBreaker(cooldown=breaker_cooldown),
        on_close=pool.aclose,
    )

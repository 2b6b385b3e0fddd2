"""Rate limiter adapters, chosen by the scheme of `cache_url` from one table: Redis shares
the counters between processes, memory (embedded mode, and `none://`) keeps them in process."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from stockroom.adapters.rate_limit.memory import memory_rate_limiter
from stockroom.adapters.rate_limit.redis import redis_rate_limiter
from stockroom.adapters.rate_limit.windows import WindowRateLimiter
from stockroom.domain.ports import RateLimit, RateLimitDecision, RateLimiter

__all__ = ["UnlimitedRateLimiter", "WindowRateLimiter", "build_rate_limiter"]


class UnlimitedRateLimiter:
    """Allows every hit: for processes that limit nothing (limits turned off, workers)."""

    async def hit(self, limit: RateLimit, key: str) -> RateLimitDecision:
        return RateLimitDecision(allowed=True)

    async def close(self) -> None:
        return None


class _LimiterFactory(Protocol):
    def __call__(
        self, url: str, /, *, socket_timeout: float, breaker_cooldown: float, key_prefix: str
    ) -> RateLimiter: ...


_BY_SCHEME: dict[str, _LimiterFactory] = {
    "redis": redis_rate_limiter,
    "rediss": redis_rate_limiter,
    "memory": memory_rate_limiter,
    "none": memory_rate_limiter,
}


def build_rate_limiter(
    cache_url: str, *, socket_timeout: float, breaker_cooldown: float, key_prefix: str
) -> RateLimiter:
    """Build the limiter for the cache `cache_url` names; nothing connects until the first hit.

    Raises:
        ValueError: the scheme is not one of `redis`, `rediss`, `memory`, `none`.
    """
    scheme = urlsplit(cache_url).scheme
    factory = _BY_SCHEME.get(scheme)
    if factory is None:
        raise ValueError(
            f"unsupported cache_url scheme {scheme!r}; use one of {sorted(_BY_SCHEME)}"
        )
    return factory(
        cache_url,
        socket_timeout=socket_timeout,
        breaker_cooldown=breaker_cooldown,
        key_prefix=key_prefix,
    )

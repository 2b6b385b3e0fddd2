"""Product cache adapters, chosen by the scheme of `cache_url` from one table."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from stockroom.adapters.cache.memory import MemoryProductCache
from stockroom.adapters.cache.null import NullProductCache
from stockroom.adapters.cache.redis import RedisProductCache
from stockroom.domain.ports import ProductCache

__all__ = [
    "MemoryProductCache",
    "NullProductCache",
    "RedisProductCache",
    "build_product_cache",
]


class _CacheFactory(Protocol):
    def __call__(
        self,
        url: str,
        *,
        ttl_seconds: int,
        socket_timeout: float,
        breaker_cooldown: float,
        key_prefix: str = ...,
    ) -> ProductCache: ...


_BY_SCHEME: dict[str, _CacheFactory] = {
    "redis": RedisProductCache.from_url,
    "rediss": RedisProductCache.from_url,
    "memory": MemoryProductCache.from_url,
    "none": NullProductCache.from_url,
}


def build_product_cache(
    cache_url: str,
    *,
    ttl_seconds: int,
    socket_timeout: float,
    breaker_cooldown: float,
    key_prefix: str = "stockroom:",
) -> ProductCache:
    """Build the cache `cache_url` names; nothing connects until the first call.

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
        ttl_seconds=ttl_seconds,
        socket_timeout=socket_timeout,
        breaker_cooldown=breaker_cooldown,
        key_prefix=key_prefix,
    )

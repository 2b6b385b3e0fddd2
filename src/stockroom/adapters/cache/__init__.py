"""Product cache adapters, chosen by the scheme of `cache_url` from one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from stockroom.adapters.cache.invalidations import InvalidationListener
from stockroom.adapters.cache.memory import MemoryProductCache
from stockroom.adapters.cache.near import NearProductCache
from stockroom.adapters.cache.null import NullProductCache
from stockroom.adapters.cache.redis import RedisProductCache
from stockroom.adapters.cache.write_only import WriteOnlyProductCache
from stockroom.domain.ports import ProductCache

__all__ = [
    "MemoryProductCache",
    "NearProductCache",
    "NullProductCache",
    "RedisProductCache",
    "WriteOnlyProductCache",
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
    near_max_entries: int = 0,
) -> ProductCache:
    """Build the cache `cache_url` names; nothing connects until the first call.

    With `near_max_entries` > 0, a `redis://` cache gets a per-process near-cache in front,
    invalidated through Redis pub/sub (`rediss://` does not: the listener speaks plain TCP).

    Raises:
        ValueError: the scheme is not one of `redis`, `rediss`, `memory`, `none`.
    """
    scheme = urlsplit(cache_url).scheme
    factory = _BY_SCHEME.get(scheme)
    if factory is None:
        raise ValueError(
            f"unsupported cache_url scheme {scheme!r}; use one of {sorted(_BY_SCHEME)}"
        )
    cache = factory(
        cache_url,
        ttl_seconds=ttl_seconds,
        socket_timeout=socket_timeout,
        breaker_cooldown=breaker_cooldown,
        key_prefix=key_prefix,
    )
    if scheme != "redis" or near_max_entries <= 0:
        return cache
    assert isinstance(cache, RedisProductCache)
    channel = cache.channel

    def listener(
        on_message: Callable[[bytes], None], on_flush: Callable[[], None]
    ) -> InvalidationListener:
        return InvalidationListener(
            cache_url, channel, on_message=on_message, on_flush=on_flush, timeout=socket_timeout
        )

    return NearProductCache(cache, listener, ttl_seconds=ttl_seconds, max_entries=near_max_entries)

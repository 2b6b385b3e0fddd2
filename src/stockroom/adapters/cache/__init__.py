"""Cache adapters, chosen by the scheme of `cache_url` from one table: one implementation per
technology, keyed by strings, serving both the product and the token cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from re import Pattern
from urllib.parse import urlsplit

from stockroom.adapters.cache.invalidations import InvalidationListener
from stockroom.adapters.cache.keyed import KeyedCache
from stockroom.adapters.cache.memory import MemoryCache
from stockroom.adapters.cache.near import PRODUCT_KEYS, TOKEN_KEYS, NearCache
from stockroom.adapters.cache.options import CacheOptions
from stockroom.adapters.cache.redis import RedisCache
from stockroom.adapters.cache.write_only import WriteOnlyCache

__all__ = [
    "CacheOptions",
    "KeyedCache",
    "MemoryCache",
    "NearCache",
    "RedisCache",
    "WriteOnlyCache",
    "build_product_cache",
    "build_token_cache",
]


def build_product_cache(cache_url: str, options: CacheOptions) -> KeyedCache:
    """The product response cache `cache_url` names; nothing connects until the first call.

    Raises:
        ValueError: the scheme is not one of `redis`, `rediss`, `memory`, `none`.
    """
    return _build(cache_url, options, _Namespace("product", PRODUCT_KEYS))


def build_token_cache(cache_url: str, options: CacheOptions) -> KeyedCache:
    """The token cache (token hash -> user) `cache_url` names; as `build_product_cache`.

    Raises:
        ValueError: the scheme is not one of `redis`, `rediss`, `memory`, `none`.
    """
    return _build(cache_url, options, _Namespace("token", TOKEN_KEYS))


@dataclass(frozen=True, slots=True)
class _Namespace:
    """What tells one cache's keys apart: the body keys' name in Redis, the keys' shape."""

    name: str
    keys: Pattern[str]


def _redis(url: str, options: CacheOptions, namespace: _Namespace) -> KeyedCache:
    """With `near_max_entries` > 0, a per-process near-cache in front, invalidated through
    Redis pub/sub (over TLS too, for `rediss://`)."""
    cache = RedisCache.from_url(url, options, namespace=namespace.name)
    if options.near_max_entries <= 0:
        return cache
    channel = cache.channel

    def listener(
        on_message: Callable[[bytes], None], on_flush: Callable[[], None]
    ) -> InvalidationListener:
        return InvalidationListener(
            url, channel, on_message=on_message, on_flush=on_flush, timeout=options.socket_timeout
        )

    return NearCache(
        cache,
        listener,
        ttl_seconds=options.ttl_seconds,
        max_entries=options.near_max_entries,
        keys=namespace.keys,
        clock=options.clock,
    )


def _memory(url: str, options: CacheOptions, namespace: _Namespace) -> KeyedCache:
    return MemoryCache.from_url(url, options)  # one instance per cache: no namespace needed


def _none(url: str, options: CacheOptions, namespace: _Namespace) -> KeyedCache:
    return WriteOnlyCache(None)


_BY_SCHEME: dict[str, Callable[[str, CacheOptions, _Namespace], KeyedCache]] = {
    "redis": _redis,
    "rediss": _redis,
    "memory": _memory,
    "none": _none,
}


def _build(cache_url: str, options: CacheOptions, namespace: _Namespace) -> KeyedCache:
    scheme = urlsplit(cache_url).scheme
    factory = _BY_SCHEME.get(scheme)
    if factory is None:
        raise ValueError(
            f"unsupported cache_url scheme {scheme!r}; use one of {sorted(_BY_SCHEME)}"
        )
    return factory(cache_url, options, namespace)

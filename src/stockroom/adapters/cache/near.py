"""A per-process near-cache in front of `RedisCache`, kept correct by Redis pub/sub.

A hit served from process memory costs no network round trip. It stays as fresh as Redis:

* this process's own invalidations drop the local entry before they go to Redis;
* every other process's invalidation arrives on the channel (`invalidations.py`) and is
  applied before any local hit is served (`drain()`), so a PATCH answered by one instance is
  seen by the next GET on any other;
* a body read from Redis is kept only if no invalidation arrived while it was in flight (the
  `_seq` counter), so an old body can never be stored after the message that retires it;
* without a confirmed subscription (Redis down or slow, reconnecting) nothing is served or
  kept locally: reads go to Redis (and its breaker) exactly as without the near-cache.

Entries live at most `ttl_seconds` and at most `max_entries` are kept (least recently used
first out). A message that is not `*` and not a key of this cache (`keys`: decimal product ids,
hex token hashes) means the channel carries something unknown: everything is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable

from stockroom.adapters.cache.bodies import ExpiringBodies
from stockroom.adapters.cache.invalidations import InvalidationListener
from stockroom.adapters.cache.keyed import Key
from stockroom.adapters.cache.metrics import CACHE_REQUESTS
from stockroom.adapters.cache.redis import RedisCache
from stockroom.domain.ports import CachedProduct

FLUSH_ALL = b"*"
PRODUCT_KEYS = re.compile(r"[0-9]+")
TOKEN_KEYS = re.compile(r"[0-9a-f]{64}")
ListenerFactory = Callable[[Callable[[bytes], None], Callable[[], None]], InvalidationListener]
"""Builds the listener from (on_message, on_flush)."""


class NearCache:
    """Process memory first, then Redis; same contract as the Redis cache."""

    def __init__(
        self,
        redis: RedisCache,
        listener_factory: ListenerFactory,
        *,
        ttl_seconds: float,
        max_entries: int,
        keys: re.Pattern[str] = PRODUCT_KEYS,
        echo_timeout: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._echo_timeout = echo_timeout
        self._entries = ExpiringBodies(
            ttl_seconds=ttl_seconds, max_entries=max_entries, clock=clock
        )
        self._seq = 0  # bumped by every invalidation or flush this process sees
        self._lock = threading.Lock()
        self._listener = listener_factory(self._on_message, self._flush)

    def __len__(self) -> int:
        return len(self._entries)

    async def read(self, key: Key) -> CachedProduct:
        listener = self._listener
        listener.start()
        listener.drain()
        if listener.healthy:
            with self._lock:
                body = self._entries.get(str(key))
            if body is not None:
                CACHE_REQUESTS.labels(result="near_hit").inc()
                # No fill follows a hit, so no generation token is needed.
                return CachedProduct(body, None)
        seq = self._seq
        found = await self._redis.read(key)
        if found.body is not None and listener.healthy:
            listener.drain()
            self._keep(str(key), found.body, seq)
        return found

    async def fill(self, key: Key, body: bytes, token: str | None) -> None:
        # Kept locally on the next read, once Redis has accepted it (the fill may be refused).
        await self._redis.fill(key, body, token)

    async def invalidate(self, key: Key) -> None:
        listener = self._listener
        # A process that only writes (an API with the product cache off) subscribes too, so
        # its later invalidations wait for their echo like a reader's. (Workers build no
        # near-cache: nobody waits on their answer; pipeline/worker.py.)
        listener.start()
        name = str(key)
        payload = name.encode()
        echo = listener.expect(payload) if listener.healthy else None
        self._drop(name)
        await self._redis.invalidate(key)
        if echo is None:
            return
        try:
            # Redis answers the writer before it writes the message to subscribers (the
            # writer's own subscription included, in the same pass): waiting for our echo
            # means every other process's socket holds the message before our caller answers.
            if key not in self._redis.lost_invalidations:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._echo_timeout):
                        await echo
        finally:
            listener.forget(payload, echo)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._listener.close()
        self._flush()
        await self._redis.close()

    def _keep(self, key: str, body: bytes, seq: int) -> None:
        with self._lock:
            if seq != self._seq:
                return  # an invalidation arrived while this body was in flight
            self._entries.put(key, body)

    def _drop(self, key: str) -> None:
        with self._lock:
            self._seq += 1
            self._entries.pop(key)

    def _flush(self) -> None:
        with self._lock:
            self._seq += 1
            self._entries.clear()

    def _on_message(self, payload: bytes) -> None:
        if payload == FLUSH_ALL:
            self._flush()
            return
        key = payload.decode("ascii", errors="replace")
        if self._keys.fullmatch(key) is None:
            self._flush()  # not ours to parse: safest to forget everything
            return
        self._drop(key)

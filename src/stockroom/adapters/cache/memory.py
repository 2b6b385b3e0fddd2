"""The cache in process memory: the embedded twin of Redis, with the same token semantics.

Every method runs without awaiting and under one lock, so each is atomic on the event loop and
across threads: in embedded mode the API's loop and the worker's event-loop thread share it.
Bodies have a TTL and an LRU bound; generation numbers come from one counter, and ids evicted
from the generation table fall back to a floor that only rises, so a token never matches again
after its key was invalidated. Keys are `str(key)`, as in Redis.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from stockroom.adapters.cache.bodies import ExpiringBodies
from stockroom.adapters.cache.keyed import Key
from stockroom.adapters.cache.metrics import CACHE_REQUESTS
from stockroom.adapters.cache.options import CacheOptions
from stockroom.domain.ports import CachedProduct


class MemoryCache:
    """In-process cache for the embedded mode and tests; holds at most `max_entries`."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._bodies = ExpiringBodies(ttl_seconds=ttl_seconds, max_entries=max_entries, clock=clock)
        self._generations: OrderedDict[str, int] = OrderedDict()
        self._counter = 0
        self._floor = 0
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, options: CacheOptions) -> MemoryCache:
        """`memory://` or `memory://?max_entries=N`; takes the TTL and the clock."""
        query = parse_qs(urlsplit(url).query)
        max_entries = int(query.get("max_entries", ["10000"])[0])
        return cls(ttl_seconds=options.ttl_seconds, max_entries=max_entries, clock=options.clock)

    def __len__(self) -> int:
        return len(self._bodies)

    async def read(self, key: Key) -> CachedProduct:
        with self._lock:
            return self._read(str(key))

    def _read(self, key: str) -> CachedProduct:
        token = str(self._generations.get(key, self._floor))
        body = self._bodies.get(key)
        CACHE_REQUESTS.labels(result="miss" if body is None else "hit").inc()
        return CachedProduct(body, token)

    async def fill(self, key: Key, body: bytes, token: str | None) -> None:
        with self._lock:
            self._fill(str(key), body, token)

    def _fill(self, key: str, body: bytes, token: str | None) -> None:
        if token != str(self._generations.get(key, self._floor)):
            return
        self._bodies.put(key, body)

    async def invalidate(self, key: Key) -> None:
        with self._lock:
            self._invalidate(str(key))

    def _invalidate(self, key: str) -> None:
        self._counter += 1
        self._generations[key] = self._counter
        self._generations.move_to_end(key)
        self._bodies.pop(key)
        while len(self._generations) > self._max:
            _, evicted = self._generations.popitem(last=False)
            self._floor = max(self._floor, evicted)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._bodies.clear()

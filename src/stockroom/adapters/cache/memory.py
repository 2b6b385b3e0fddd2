"""`ProductCache` in process memory: the embedded twin of Redis, with the same token semantics.

Every method runs without awaiting and under one lock, so each is atomic on the event loop and
across threads: in embedded mode the API's loop and the worker's event-loop thread share it.
Bodies have a TTL and an LRU bound; generation numbers come from one counter, and ids evicted
from the generation table fall back to a floor that only rises, so a token never matches again
after its product was invalidated.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from stockroom.adapters.cache.bodies import ExpiringBodies
from stockroom.adapters.cache.metrics import CACHE_REQUESTS
from stockroom.domain.ports import CachedProduct


class MemoryProductCache:
    """In-process `ProductCache` for the embedded mode and tests; holds at most `max_entries`."""

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
        self._generations: OrderedDict[int, int] = OrderedDict()
        self._counter = 0
        self._floor = 0
        self._lock = threading.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl_seconds: int,
        socket_timeout: float,
        breaker_cooldown: float,
        key_prefix: str = "stockroom:",
    ) -> MemoryProductCache:
        """`memory://` or `memory://?max_entries=N`; the network settings do not apply."""
        query = parse_qs(urlsplit(url).query)
        max_entries = int(query.get("max_entries", ["10000"])[0])
        return cls(ttl_seconds=ttl_seconds, max_entries=max_entries)

    def __len__(self) -> int:
        return len(self._bodies)

    async def read(self, product_id: int) -> CachedProduct:
        with self._lock:
            return self._read(product_id)

    def _read(self, product_id: int) -> CachedProduct:
        token = str(self._generations.get(product_id, self._floor))
        body = self._bodies.get(product_id)
        CACHE_REQUESTS.labels(result="miss" if body is None else "hit").inc()
        return CachedProduct(body, token)

    async def fill(self, product_id: int, body: bytes, token: str | None) -> None:
        with self._lock:
            self._fill(product_id, body, token)

    def _fill(self, product_id: int, body: bytes, token: str | None) -> None:
        if token != str(self._generations.get(product_id, self._floor)):
            return
        self._bodies.put(product_id, body)

    async def invalidate(self, product_id: int) -> None:
        with self._lock:
            self._invalidate(product_id)

    def _invalidate(self, product_id: int) -> None:
        self._counter += 1
        self._generations[product_id] = self._counter
        self._generations.move_to_end(product_id)
        self._bodies.pop(product_id)
        while len(self._generations) > self._max:
            _, evicted = self._generations.popitem(last=False)
            self._floor = max(self._floor, evicted)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._bodies.clear()

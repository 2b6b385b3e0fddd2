"""A cache that serves nothing but still invalidates: `none://`, `STOCKROOM_CACHE_PRODUCTS=false`.

With `shared` (the product cache off): product responses are always read from the database,
while the shared cache stays correct for any process that does serve from it: during a rolling
change of the setting, or for a fleet where only some processes turn it off, every write still
invalidates. Without (`none://`): nothing is cached anywhere, the baseline of the uncached path."""

from __future__ import annotations

from stockroom.adapters.cache.keyed import Key, KeyedCache
from stockroom.domain.ports import CachedProduct


class WriteOnlyCache:
    """Reads always miss without a token (so nothing is filled); invalidations go to `shared`."""

    def __init__(self, shared: KeyedCache | None) -> None:
        self._shared = shared

    async def read(self, key: Key) -> CachedProduct:
        return CachedProduct(None, None)

    async def fill(self, key: Key, body: bytes, token: str | None) -> None:
        return None

    async def invalidate(self, key: Key) -> None:
        if self._shared is not None:
            await self._shared.invalidate(key)

    async def ping(self) -> None:
        if self._shared is not None:
            await self._shared.ping()

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()

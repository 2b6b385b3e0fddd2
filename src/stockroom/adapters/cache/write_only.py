"""`ProductCache` that serves nothing but still invalidates: `STOCKROOM_CACHE_PRODUCTS=false`.

Product responses are then always read from the database, while the shared cache stays
correct for any process that does serve from it: during a rolling change of the setting,
or for a fleet where only some processes turn it off, every write still invalidates."""

from __future__ import annotations

from stockroom.domain.ports import CachedProduct, ProductCache


class WriteOnlyProductCache:
    """Reads always miss without a token (so nothing is filled); invalidations go through."""

    def __init__(self, shared: ProductCache) -> None:
        self._shared = shared

    async def read(self, product_id: int) -> CachedProduct:
        return CachedProduct(None, None)

    async def fill(self, product_id: int, body: bytes, token: str | None) -> None:
        return None

    async def invalidate(self, product_id: int) -> None:
        await self._shared.invalidate(product_id)

    async def ping(self) -> None:
        await self._shared.ping()

    async def close(self) -> None:
        await self._shared.close()

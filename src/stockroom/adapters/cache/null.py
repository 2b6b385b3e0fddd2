"""`ProductCache` that caches nothing (`none://`): the baseline for the uncached path."""

from __future__ import annotations

from stockroom.domain.ports import CachedProduct


class NullProductCache:
    """Always a miss without a token, so nothing is ever filled."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl_seconds: int,
        socket_timeout: float,
        breaker_cooldown: float,
        key_prefix: str = "stockroom:",
    ) -> NullProductCache:
        return cls()

    async def read(self, product_id: int) -> CachedProduct:
        return CachedProduct(None, None)

    async def fill(self, product_id: int, body: bytes, token: str | None) -> None:
        return None

    async def invalidate(self, product_id: int) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

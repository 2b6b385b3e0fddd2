"""What every cache adapter is: one store keyed by strings, serving both cache ports.

`ProductCache` passes product ids and `TokenCache` token hashes; an adapter keys an entry by
`str(key)`, so a product id and its decimal string name the same entry. Which port an instance
serves is decided where it is built (`build_product_cache`, `build_token_cache`), and each
gets its own keys in Redis (`CacheOptions.key_prefix`) or its own instance in memory.
"""

from __future__ import annotations

from typing import Protocol

from stockroom.domain.ports import CachedProduct

Key = int | str


class KeyedCache(Protocol):
    """A `ProductCache` and a `TokenCache` at once: read, fill under a token, invalidate."""

    async def read(self, key: Key) -> CachedProduct: ...

    async def fill(self, key: Key, body: bytes, token: str | None) -> None: ...

    async def invalidate(self, key: Key) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

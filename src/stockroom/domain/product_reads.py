"""The read path of GET /products/{id}: cache-aside over the serialized product.

The cache stores the response bytes with a one-line header naming the owner and the
ETag, so a hit is authorised like a miss and answered without parsing or re-serializing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from stockroom.domain.errors import ProductNotFound
from stockroom.domain.models import Product, User
from stockroom.domain.ports import Lookups, ProductCache
from stockroom.domain.products import may_see, visible_to


@dataclass(frozen=True, slots=True)
class ProductBody:
    body: bytes
    etag: str
    cached: bool


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


async def read_product(
    lookups: Lookups,
    cache: ProductCache,
    actor: User,
    product_id: int,
    render: Callable[[Product], bytes],
) -> ProductBody:
    entry = await cache.read(product_id)
    if entry.body is not None:
        owner_id, etag, body = _unpack(entry.body)
        if not may_see(actor, owner_id):
            raise ProductNotFound()
        return ProductBody(body, etag, cached=True)
    product = visible_to(actor, await lookups.product(product_id))
    body = render(product)
    etag = etag_of(body)
    await cache.fill(product_id, _pack(product.user_id, etag, body), entry.token)
    return ProductBody(body, etag, cached=False)


def _pack(owner_id: int, etag: str, body: bytes) -> bytes:
    return f"{owner_id} {etag}\n".encode("ascii") + body


def _unpack(entry: bytes) -> tuple[int, str, bytes]:
    header, _, body = entry.partition(b"\n")
    owner, _, etag = header.decode("ascii").partition(" ")
    return int(owner), etag, body

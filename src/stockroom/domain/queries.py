"""Commands and queries the services take: plain values, validated at the edge."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final


@dataclass(frozen=True, slots=True)
class NewProduct:
    product_name: str
    product_price: Decimal
    product_description: str | None = None
    product_images: tuple[str, ...] = ()
    sku: str | None = None
    user_id: int | None = None


class Unset(enum.Enum):
    """Marks a field a partial update leaves as it is (None may be a value to set)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


@dataclass(frozen=True, slots=True)
class ProductPatch:
    """A partial update (PATCH): only the fields given change; None clears optional ones."""

    product_name: str | Unset = UNSET
    product_description: str | Unset | None = UNSET
    product_price: Decimal | Unset = UNSET
    sku: str | Unset | None = UNSET
    user_id: int | Unset = UNSET
    product_images: tuple[str, ...] | Unset = UNSET


class ProductSort(enum.StrEnum):
    NEWEST = "-created_at"
    OLDEST = "created_at"
    CHEAPEST = "product_price"
    DEAREST = "-product_price"
    NAME = "product_name"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the previous page ended: the sort value and id of its last product."""

    value: str
    id: int


@dataclass(frozen=True, slots=True)
class ProductQuery:
    owner_id: int
    sort: ProductSort = ProductSort.NEWEST
    limit: int = 20
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    name: str | None = None
    sku: str | None = None
    after: Cursor | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A create's first response, kept under its Idempotency-Key until `expires_at`."""

    user_id: int
    scope: str
    key: str
    fingerprint: str
    status_code: int
    sealed_body: bytes
    location: str | None
    created_at: datetime
    expires_at: datetime

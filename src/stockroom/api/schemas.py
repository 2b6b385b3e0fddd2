"""Request and response shapes of the product resource, separate from tables and domain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from stockroom.api.fields import Description, ImageUrl, Price, ProductName, Sku
from stockroom.domain import rules
from stockroom.domain.models import Product
from stockroom.domain.views import image_view

_FORBID = ConfigDict(extra="forbid")
ImageList = Annotated[list[ImageUrl], Field(max_length=rules.MAX_IMAGES)]
# Strict: a JSON `true` must not become user 1.
UserIdField = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # a null default would contradict the non-null type


_OMITTABLE: Any = Field(default=None, json_schema_extra=_without_default)


class ProductCreate(BaseModel):
    model_config = _FORBID

    product_name: ProductName
    product_price: Price
    product_description: Description | None = None
    product_images: ImageList = Field(default_factory=list)
    sku: Sku | None = None
    user_id: UserIdField | None = None


class ProductUpdate(BaseModel):
    """Every field optional; only the fields sent are changed (null clears optional ones).

    Required fields may be omitted but not nulled, so their schema leaves `null` out.
    """

    model_config = _FORBID

    product_name: ProductName | SkipJsonSchema[None] = _OMITTABLE
    product_price: Price | SkipJsonSchema[None] = _OMITTABLE
    product_description: Description | None = None
    product_images: ImageList | SkipJsonSchema[None] = _OMITTABLE
    sku: Sku | None = None
    user_id: UserIdField | SkipJsonSchema[None] = _OMITTABLE

    @field_validator("product_name", "product_price", "product_images", "user_id", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null")
        return value


class ImagePublic(BaseModel):
    source_url: str
    status: str
    compressed_url: str | None
    width: int | None
    height: int | None
    bytes_in: int | None
    bytes_out: int | None
    error: str | None
    error_code: str | None


class ProductPublic(BaseModel):
    id: int
    user_id: int
    sku: str | None
    product_name: str
    product_description: str | None
    product_price: float
    product_images: list[str]
    compressed_product_images: list[str | None]
    images: list[ImagePublic]
    created_at: datetime
    updated_at: datetime


class ProductPage(BaseModel):
    items: list[ProductPublic]
    next_cursor: str | None


def product_dict(product: Product) -> dict[str, Any]:
    """The public representation, built by hand: this is the hot path of every read."""
    return {
        "id": product.id,
        "user_id": product.user_id,
        "sku": product.sku,
        "product_name": product.product_name,
        "product_description": product.product_description,
        # A price has at most 10 significant digits, so the shortest float repr prints the
        # exact decimal back (19.99 -> 19.99): JSON clients get a number, never 19.989999.
        "product_price": float(product.product_price),
        "product_images": product.product_images,
        "compressed_product_images": product.compressed_product_images,
        "images": [image_view(image) for image in product.images],
        "created_at": product.created_at,
        "updated_at": product.updated_at,
    }


def product_json(product: Product) -> bytes:
    return orjson.dumps(product_dict(product), option=orjson.OPT_UTC_Z)


def product_page_json(items: list[Product], next_cursor: str | None) -> bytes:
    return orjson.dumps(
        {"items": [product_dict(p) for p in items], "next_cursor": next_cursor},
        option=orjson.OPT_UTC_Z,
    )

"""Product and product-image rows, read with one Core query each, mapped explicitly."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, and_, bindparam, delete, insert, literal, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from stockroom.db.tables import image_jobs, product_images, products
from stockroom.domain.errors import SkuTaken
from stockroom.domain.models import ImageResult, ImageStatus, JobKind, Product, ProductImage
from stockroom.domain.products import parse_sort_value
from stockroom.domain.queries import UNSET, NewProduct, ProductPatch, ProductQuery, ProductSort

_IMAGE_COLUMNS = [
    product_images.c.id,
    product_images.c.position,
    product_images.c.source_url,
    product_images.c.status,
    product_images.c.compressed_url,
    product_images.c.output_key,
    product_images.c.width,
    product_images.c.height,
    product_images.c.bytes_in,
    product_images.c.bytes_out,
    product_images.c.error,
    product_images.c.error_code,
]


def prefixed_image_columns(table: str = "") -> str:
    """An image row's columns, each `AS img_<name>` (what `image_from_prefixed` reads), for
    hand-written SQL: `table` qualifies them ("i." in a join), none in a RETURNING list."""
    return ", ".join(f"{table}{c.name} AS img_{c.name}" for c in _IMAGE_COLUMNS)


# Built once: constructing a select costs more Python than executing a cached one.
_GET_PRODUCT = (
    select(products, *[c.label(f"img_{c.name}") for c in _IMAGE_COLUMNS])
    .outerjoin(product_images, product_images.c.product_id == products.c.id)
    .where(products.c.id == bindparam("product_id"))
    .order_by(product_images.c.position, product_images.c.id)
)
_SORTS = {
    ProductSort.NEWEST: (products.c.created_at, True),
    ProductSort.OLDEST: (products.c.created_at, False),
    ProductSort.CHEAPEST: (products.c.product_price, False),
    ProductSort.DEAREST: (products.c.product_price, True),
    ProductSort.NAME: (products.c.product_name, False),
}


class SqlProductRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, draft: NewProduct, user_id: int) -> Product:
        now = datetime.now(UTC)
        statement = (
            insert(products)
            .values(
                user_id=user_id,
                sku=draft.sku,
                product_name=draft.product_name,
                product_description=draft.product_description,
                product_price=draft.product_price,
                created_at=now,
                updated_at=now,
            )
            .returning(*products.c)
        )
        with _translate_sku_conflict():
            row = (await self._conn.execute(statement)).one()
        return product_from(row._mapping, ())

    async def get(self, product_id: int) -> Product | None:
        rows = (await self._conn.execute(_GET_PRODUCT, {"product_id": product_id})).all()
        if not rows:
            return None
        images = tuple(image_from_prefixed(row._mapping) for row in rows if row.img_id is not None)
        return product_from(rows[0]._mapping, images)

    async def search(self, query: ProductQuery) -> list[Product]:
        column, descending = _SORTS[query.sort]
        conditions: list[ColumnElement[bool]] = [products.c.user_id == query.owner_id]
        if query.min_price is not None:
            conditions.append(products.c.product_price >= query.min_price)
        if query.max_price is not None:
            conditions.append(products.c.product_price <= query.max_price)
        if query.name:
            conditions.append(products.c.product_name.icontains(query.name, autoescape=True))
        if query.sku is not None:
            conditions.append(products.c.sku == query.sku)
        if query.after is not None:
            # The bound value takes the column's type, so SQLite compares cents with cents.
            value = literal(parse_sort_value(query.sort, query.after.value), column.type)
            after = tuple_(column, products.c.id)
            boundary = tuple_(value, literal(query.after.id, products.c.id.type))
            conditions.append(after < boundary if descending else after > boundary)
        order = [column.desc(), products.c.id.desc()] if descending else [column, products.c.id]
        statement = select(products).where(and_(*conditions)).order_by(*order).limit(query.limit)
        rows = (await self._conn.execute(statement)).all()
        images = await self._images_of([row.id for row in rows])
        return [product_from(row._mapping, images.get(row.id, ())) for row in rows]

    async def lock(self, product_id: int) -> None:
        if self._conn.dialect.name != "postgresql":
            return  # SQLite: BEGIN IMMEDIATE already serialises every writer
        images = select(product_images.c.id).where(product_images.c.product_id == product_id)
        for statement in (
            select(image_jobs.c.id)
            .where(image_jobs.c.product_image_id.in_(images))
            .order_by(image_jobs.c.id),
            images.order_by(product_images.c.id),
            select(products.c.id).where(products.c.id == product_id),
        ):
            await self._conn.execute(statement.with_for_update())

    async def update(self, product_id: int, patch: ProductPatch) -> None:
        values: dict[Column[Any], object] = {
            column: value
            for column, value in (
                (products.c.product_name, patch.product_name),
                (products.c.product_description, patch.product_description),
                (products.c.product_price, patch.product_price),
                (products.c.sku, patch.sku),
                (products.c.user_id, patch.user_id),
            )
            if value is not UNSET
        }
        values[products.c.updated_at] = datetime.now(UTC)
        statement = update(products).where(products.c.id == product_id).values(values)
        with _translate_sku_conflict():
            await self._conn.execute(statement)

    async def delete(self, product_id: int) -> None:
        await self._conn.execute(delete(products).where(products.c.id == product_id))

    async def add_images(self, product_id: int, images: Sequence[tuple[int, str]]) -> list[int]:
        if not images:
            return []
        now = datetime.now(UTC)
        rows = [
            {
                "product_id": product_id,
                "position": position,
                "source_url": url,
                "status": ImageStatus.PENDING.value,
                "created_at": now,
                "updated_at": now,
            }
            for position, url in images
        ]
        # One statement for all rows; sort_by_parameter_order returns the ids in input order
        # (SQLAlchemy's "insertmanyvalues"), on both engines.
        statement = insert(product_images).returning(
            product_images.c.id, sort_by_parameter_order=True
        )
        return [int(image_id) for image_id in (await self._conn.execute(statement, rows)).scalars()]

    async def record_image_result(self, image_id: int, result: ImageResult) -> int | None:
        return await self._update_image(
            image_id,
            status=ImageStatus.READY.value,
            compressed_url=result.output_url,
            **result_columns(result),
        )

    async def record_image_failure(self, image_id: int, error: str, error_code: str) -> int | None:
        return await self._update_image(
            image_id, status=ImageStatus.FAILED.value, error=error, error_code=error_code
        )

    async def set_image_status(self, image_id: int, status: ImageStatus) -> int | None:
        return await self._update_image(image_id, status=status.value, error=None, error_code=None)

    async def output_key_in_use(self, key: str) -> bool:
        in_images = select(product_images.c.id).where(product_images.c.output_key == key)
        in_jobs = select(image_jobs.c.id).where(
            image_jobs.c.output_key == key, image_jobs.c.kind == JobKind.STANDALONE.value
        )
        for statement in (in_images.limit(1), in_jobs.limit(1)):
            if (await self._conn.execute(statement)).first() is not None:
                return True
        return False

    async def _update_image(self, image_id: int, **values: object) -> int | None:
        statement = (
            update(product_images)
            .where(product_images.c.id == image_id)
            .values(**values, updated_at=datetime.now(UTC))
            .returning(product_images.c.product_id)
        )
        product_id: int | None = (await self._conn.execute(statement)).scalar_one_or_none()
        if product_id is not None:
            await self._conn.execute(
                update(products)
                .where(products.c.id == product_id)
                .values(updated_at=datetime.now(UTC))
            )
        return product_id

    async def move_images(self, moves: Sequence[tuple[int, int]]) -> None:
        for image_id, position in moves:
            await self._conn.execute(
                update(product_images)
                .where(product_images.c.id == image_id)
                .values(position=position, updated_at=datetime.now(UTC))
            )

    async def delete_images(self, image_ids: Sequence[int]) -> None:
        if image_ids:
            await self._conn.execute(
                delete(product_images).where(product_images.c.id.in_(image_ids))
            )

    async def _images_of(self, product_ids: list[int]) -> dict[int, tuple[ProductImage, ...]]:
        if not product_ids:
            return {}
        statement = (
            select(product_images.c.product_id, *_IMAGE_COLUMNS)
            .where(product_images.c.product_id.in_(product_ids))
            .order_by(product_images.c.product_id, product_images.c.position)
        )
        grouped: dict[int, list[ProductImage]] = {}
        for row in await self._conn.execute(statement):
            grouped.setdefault(row.product_id, []).append(_image(row._mapping))
        return {key: tuple(value) for key, value in grouped.items()}


@contextmanager
def _translate_sku_conflict() -> Iterator[None]:
    """A unique-(user, sku) violation is the caller's conflict, not a server error."""
    try:
        yield
    except IntegrityError as exc:
        if "sku" in str(exc.orig).lower():
            raise SkuTaken() from exc
        raise


def product_from(values: Any, images: Sequence[ProductImage]) -> Product:
    """A product from a `products` row, read by column name (a SQLAlchemy row's
    `_mapping` or an asyncpg record: db/lookups.py maps its rows through here too)."""
    return Product(
        id=values["id"],
        user_id=values["user_id"],
        sku=values["sku"],
        product_name=values["product_name"],
        product_description=values["product_description"],
        product_price=values["product_price"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        images=tuple(images),
    )


def image_from_prefixed(values: Any) -> ProductImage:
    """An image from the `img_`-prefixed columns of the product-with-images join."""
    return _image({c.name: values[f"img_{c.name}"] for c in _IMAGE_COLUMNS})


def _image(values: Any) -> ProductImage:
    return ProductImage(
        id=values["id"],
        position=values["position"],
        source_url=values["source_url"],
        status=ImageStatus(values["status"]),
        compressed_url=values["compressed_url"],
        output_key=values["output_key"],
        width=values["width"],
        height=values["height"],
        bytes_in=values["bytes_in"],
        bytes_out=values["bytes_out"],
        error=values["error"],
        error_code=values["error_code"],
    )


def result_columns(result: ImageResult) -> dict[str, object]:
    """The columns a result fills on an image row and on its job's row alike (the URL's
    column is named differently), clearing any earlier error."""
    return {
        "output_key": result.output_key,
        "width": result.width,
        "height": result.height,
        "bytes_in": result.bytes_in,
        "bytes_out": result.bytes_out,
        "error": None,
        "error_code": None,
    }

"""CSV imports: the import, its stored rows and batches, the images its rows point at, and the
bulk product writes a batch makes (one statement for many rows wherever the engines allow)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import String, any_, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stockroom.db.products import image_from_prefixed, product_from
from stockroom.db.tables import (
    image_jobs,
    import_batches,
    import_images,
    import_rows,
    imports,
    product_images,
    products,
)
from stockroom.db.types import UTCDateTime
from stockroom.domain.csv_import import ImportRow
from stockroom.domain.errors import FieldError, InvalidInput, SkuTaken
from stockroom.domain.models import ImageStatus, Import, ImportStatus, JobStatus, Product
from stockroom.domain.ports import ImageTally, OutputRow, ProductFields
from stockroom.domain.queries import NewProduct

_UNFINISHED_JOBS = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)
_OPEN = (ImportStatus.PENDING.value, ImportStatus.PROCESSING.value)
_WAITING = (ImageStatus.PENDING.value, ImageStatus.PROCESSING.value)
_CHUNK = 1000  # rows per INSERT: bounds the parameters (and memory) of one statement
_ARRAY_CHUNK = 10_000
_IMAGE_COLUMNS = [c.label(f"img_{c.name}") for c in product_images.c]
_PG_ADD_ROWS = text(
    'INSERT INTO import_rows (import_id, "row", batch, data)'
    " SELECT :import_id, r, b, d"
    " FROM unnest(CAST(:rows AS integer[]), CAST(:batches AS integer[]), CAST(:data AS text[]))"
    " AS t(r, b, d)"
)
_PG_ADD_PRODUCTS = text(
    "INSERT INTO products (user_id, sku, product_name, product_description, product_price,"
    " created_at, updated_at)"
    " SELECT :user_id, s, n, d, p, :now, :now"
    " FROM unnest(CAST(:skus AS text[]), CAST(:names AS text[]),"
    " CAST(:descriptions AS text[]), CAST(:prices AS numeric[])) AS t(s, n, d, p)"
    " RETURNING id, sku"
).bindparams(bindparam("now", type_=UTCDateTime))
_UPDATE_PRODUCT = (
    update(products)
    .where(products.c.id == bindparam("b_id"))
    .values(
        product_name=bindparam("b_name"),
        product_price=bindparam("b_price", type_=products.c.product_price.type),
        product_description=bindparam("b_description"),
        updated_at=bindparam("b_now", type_=products.c.updated_at.type),
    )
)


class SqlImportRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection
        # PostgreSQL takes a batch's rows as arrays, `unnest`ed: one short statement, where a
        # multi-row VALUES of thousands of parameters costs more to parse and plan than to run.
        self._postgres = connection.dialect.name == "postgresql"

    async def add(self, imported: Import) -> None:
        await self._conn.execute(
            insert(imports).values(
                id=imported.id,
                user_id=imported.user_id,
                status=imported.status.value,
                columns=orjson.dumps(imported.columns).decode(),
                rows=imported.rows,
                images_total=imported.images_total,
                batches=imported.batches,
                callback_url=imported.callback_url,
                request_id=imported.request_id,
                created_at=imported.created_at,
            )
        )

    async def add_rows(self, import_id: str, rows: Sequence[ImportRow], per_batch: int) -> None:
        if self._postgres:
            for start in range(0, len(rows), _ARRAY_CHUNK):
                chunk = rows[start : start + _ARRAY_CHUNK]
                await self._conn.execute(
                    _PG_ADD_ROWS,
                    {
                        "import_id": import_id,
                        "rows": [row.row for row in chunk],
                        "batches": [i // per_batch for i in range(start, start + len(chunk))],
                        "data": [_dump(row) for row in chunk],
                    },
                )
            return
        for start in range(0, len(rows), _CHUNK):
            values = [
                {
                    "import_id": import_id,
                    "row": row.row,
                    "batch": index // per_batch,
                    "data": _dump(row),
                }
                for index, row in enumerate(rows[start : start + _CHUNK], start)
            ]
            await self._conn.execute(insert(import_rows), values)

    async def add_batches(self, import_id: str, batch_ids: Sequence[str]) -> None:
        if batch_ids:
            values = [
                {"id": batch_id, "import_id": import_id, "number": number}
                for number, batch_id in enumerate(batch_ids)
            ]
            await self._conn.execute(insert(import_batches), values)

    async def get(self, import_id: str) -> Import | None:
        row = (await self._conn.execute(select(imports).where(imports.c.id == import_id))).first()
        return import_from(row._mapping) if row else None

    async def search(
        self, *, user_id: int | None, limit: int, after: str | None = None
    ) -> list[Import]:
        statement = select(imports)
        if user_id is not None:
            statement = statement.where(imports.c.user_id == user_id)
        if after is not None:
            anchor = select(imports.c.created_at).where(imports.c.id == after)
            created = (await self._conn.execute(anchor)).scalar_one_or_none()
            if created is None:
                raise InvalidInput(
                    "invalid cursor", [FieldError("cursor", "is not a cursor from this list")]
                )
            statement = statement.where(
                (imports.c.created_at < created)
                | ((imports.c.created_at == created) & (imports.c.id < after))
            )
        statement = statement.order_by(imports.c.created_at.desc(), imports.c.id.desc())
        rows = (await self._conn.execute(statement.limit(limit))).all()
        return [import_from(row._mapping) for row in rows]

    async def claim_batch(self, batch_id: str, now: datetime) -> tuple[str, int] | None:
        statement = (
            update(import_batches)
            .where(import_batches.c.id == batch_id, import_batches.c.applied_at.is_(None))
            .values(applied_at=now)
            .returning(import_batches.c.import_id, import_batches.c.number)
        )
        row = (await self._conn.execute(statement)).first()
        return (row.import_id, row.number) if row else None

    async def batch_rows(self, import_id: str, number: int) -> list[ImportRow]:
        statement = (
            select(import_rows.c.row, import_rows.c.data)
            .where(import_rows.c.import_id == import_id, import_rows.c.batch == number)
            .order_by(import_rows.c.row)
        )
        return [_load(row.row, row.data) for row in await self._conn.execute(statement)]

    async def batch_applied(self, import_id: str, rows: int, now: datetime) -> Import:
        statement = (
            update(imports)
            .where(imports.c.id == import_id)
            .values(
                batches_done=imports.c.batches_done + 1,
                rows_done=imports.c.rows_done + rows,
                status=ImportStatus.PROCESSING.value,
                started_at=func.coalesce(imports.c.started_at, now),
            )
            .returning(imports)
        )
        return import_from((await self._conn.execute(statement)).one()._mapping)

    async def products_by_sku(self, user_id: int, skus: Sequence[str]) -> dict[str, int]:
        if not skus:
            return {}
        if self._postgres:  # one array parameter: one cached plan whatever the batch size
            matching = products.c.sku == any_(bindparam("skus", type_=ARRAY(String)))
            statement = select(products.c.sku, products.c.id).where(
                products.c.user_id == user_id, matching
            )
            rows = await self._conn.execute(statement, {"skus": list(skus)})
        else:
            statement = select(products.c.sku, products.c.id).where(
                products.c.user_id == user_id, products.c.sku.in_(skus)
            )
            rows = await self._conn.execute(statement)
        return {row.sku: row.id for row in rows}

    async def lock_products(self, product_ids: Sequence[int]) -> None:
        if self._conn.dialect.name != "postgresql" or not product_ids:
            return  # SQLite: BEGIN IMMEDIATE already serialises every writer
        images = select(product_images.c.id).where(product_images.c.product_id.in_(product_ids))
        for statement in (
            select(image_jobs.c.id)
            .where(image_jobs.c.product_image_id.in_(images))
            .order_by(image_jobs.c.id),
            images.order_by(product_images.c.id),
            select(products.c.id).where(products.c.id.in_(product_ids)).order_by(products.c.id),
        ):
            await self._conn.execute(statement.with_for_update())

    async def products(self, product_ids: Sequence[int]) -> list[Product]:
        if not product_ids:
            return []
        images: dict[int, list[Any]] = {}
        statement = (
            select(*_IMAGE_COLUMNS)
            .where(product_images.c.product_id.in_(product_ids))
            .order_by(product_images.c.product_id, product_images.c.position, product_images.c.id)
        )
        for row in await self._conn.execute(statement):
            images.setdefault(row.img_product_id, []).append(image_from_prefixed(row._mapping))
        rows = await self._conn.execute(select(products).where(products.c.id.in_(product_ids)))
        return [product_from(row._mapping, images.get(row.id, ())) for row in rows]

    async def add_products(
        self, user_id: int, drafts: Sequence[NewProduct], now: datetime
    ) -> list[int]:
        if self._postgres and drafts:
            arrays = {
                "user_id": user_id,
                "now": now,
                "skus": [draft.sku for draft in drafts],
                "names": [draft.product_name for draft in drafts],
                "descriptions": [draft.product_description for draft in drafts],
                "prices": [draft.product_price for draft in drafts],
            }
            with _translate_sku_conflict():
                made = await self._conn.execute(_PG_ADD_PRODUCTS, arrays)
            by_sku = {row.sku: row.id for row in made}
            return [by_sku[draft.sku] for draft in drafts]
        ids: list[int] = []
        statement = insert(products).returning(products.c.id, sort_by_parameter_order=True)
        for start in range(0, len(drafts), _CHUNK):
            values = [
                {
                    "user_id": user_id,
                    "sku": draft.sku,
                    "product_name": draft.product_name,
                    "product_description": draft.product_description,
                    "product_price": draft.product_price,
                    "created_at": now,
                    "updated_at": now,
                }
                for draft in drafts[start : start + _CHUNK]
            ]
            with _translate_sku_conflict():
                result = await self._conn.execute(statement, values)
            ids.extend(int(product_id) for product_id in result.scalars())
        return ids

    async def update_products(self, changes: Sequence[ProductFields], now: datetime) -> None:
        if changes:
            values = [
                {
                    "b_id": change.product_id,
                    "b_name": change.product_name,
                    "b_price": change.product_price,
                    "b_description": change.product_description,
                    "b_now": now,
                }
                for change in changes
            ]
            await self._conn.execute(_UPDATE_PRODUCT, values)

    async def tag_jobs(self, import_id: str, job_ids: Sequence[str]) -> None:
        for start in range(0, len(job_ids), _CHUNK):
            await self._conn.execute(
                update(image_jobs)
                .where(image_jobs.c.id.in_(job_ids[start : start + _CHUNK]))
                .values(import_id=import_id)
            )

    async def link_images(self, import_id: str, links: Sequence[tuple[int, int, int]]) -> None:
        for start in range(0, len(links), _CHUNK):
            values = [
                {
                    "import_id": import_id,
                    "row": row,
                    "position": position,
                    "product_image_id": image,
                }
                for row, position, image in links[start : start + _CHUNK]
            ]
            await self._conn.execute(insert(import_images), values)

    async def has_unfinished_jobs(self, import_id: str) -> bool:
        statement = (
            select(image_jobs.c.id)
            .where(image_jobs.c.import_id == import_id, image_jobs.c.status.in_(_UNFINISHED_JOBS))
            .limit(1)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def tally(self, import_id: str) -> ImageTally:
        statement = (
            select(product_images.c.status, func.count())
            .select_from(
                import_images.outerjoin(
                    product_images, product_images.c.id == import_images.c.product_image_id
                )
            )
            .where(import_images.c.import_id == import_id)
            .group_by(product_images.c.status)
        )
        counts = {row[0]: int(row[1]) for row in await self._conn.execute(statement)}
        return ImageTally(
            done=counts.get(ImageStatus.READY.value, 0),
            # A removed image (its product changed or deleted since) has no output either.
            failed=counts.get(ImageStatus.FAILED.value, 0) + counts.get(None, 0),
            waiting=sum(counts.get(status, 0) for status in _WAITING),
        )

    async def finish(
        self,
        import_id: str,
        status: ImportStatus,
        tally: ImageTally,
        now: datetime,
        error: str | None = None,
    ) -> Import | None:
        statement = (
            update(imports)
            .where(imports.c.id == import_id, imports.c.status.in_(_OPEN))
            .values(
                status=status.value,
                images_done=tally.done,
                images_failed=tally.failed,
                error=error,
                finished_at=now,
            )
            .returning(imports)
        )
        row = (await self._conn.execute(statement)).first()
        return import_from(row._mapping) if row else None

    async def settling(self) -> list[str]:
        statement = select(imports.c.id).where(
            imports.c.status == ImportStatus.PROCESSING.value,
            imports.c.batches_done >= imports.c.batches,
        )
        return [row.id for row in await self._conn.execute(statement)]

    async def unapplied_batches(
        self, created_before: datetime | None
    ) -> list[tuple[str, str | None]]:
        statement = (
            select(import_batches.c.id, imports.c.request_id)
            .join(imports, imports.c.id == import_batches.c.import_id)
            .where(import_batches.c.applied_at.is_(None), imports.c.status.in_(_OPEN))
            .order_by(imports.c.created_at, import_batches.c.number)
        )
        if created_before is not None:
            statement = statement.where(imports.c.created_at < created_before)
        return [(row.id, row.request_id) for row in await self._conn.execute(statement)]

    async def output_rows(self, import_id: str, after_row: int, limit: int) -> list[OutputRow]:
        statement = (
            select(import_rows.c.row, import_rows.c.data)
            .where(import_rows.c.import_id == import_id, import_rows.c.row > after_row)
            .order_by(import_rows.c.row)
            .limit(limit)
        )
        rows = [_load(row.row, row.data) for row in await self._conn.execute(statement)]
        if not rows:
            return []
        ready: dict[tuple[int, int], str] = {}
        images = (
            select(import_images.c.row, import_images.c.position, product_images.c.compressed_url)
            .join(product_images, product_images.c.id == import_images.c.product_image_id)
            .where(
                import_images.c.import_id == import_id,
                import_images.c.row.between(rows[0].row, rows[-1].row),
                product_images.c.status == ImageStatus.READY.value,
            )
        )
        for image in await self._conn.execute(images):
            ready[(image.row, image.position)] = image.compressed_url
        return [
            OutputRow(
                row.row,
                row.cells,
                tuple(ready.get((row.row, position)) for position in range(len(row.image_urls))),
            )
            for row in rows
        ]


@contextmanager
def _translate_sku_conflict() -> Iterator[None]:
    """Another product took a sku since the batch looked (a concurrent import or POST)."""
    try:
        yield
    except IntegrityError as exc:
        if "sku" in str(exc.orig).lower():
            raise SkuTaken() from exc
        raise


def _dump(row: ImportRow) -> str:
    """A stored row: compact JSON, the price as its exact decimal text."""
    price = None if row.price is None else str(row.price)
    fields = [row.sku, row.name, row.image_urls, price, row.description, row.cells]
    return orjson.dumps(fields).decode()


def _load(number: int, data: str) -> ImportRow:
    sku, name, urls, price, description, cells = orjson.loads(data)
    return ImportRow(
        row=number,
        sku=sku,
        name=name,
        image_urls=tuple(urls),
        price=None if price is None else Decimal(price),
        description=description,
        cells=tuple(cells),
    )


def import_from(values: Any) -> Import:
    """An import from an `imports` row, read by column name."""
    return Import(
        id=values["id"],
        user_id=values["user_id"],
        status=ImportStatus(values["status"]),
        columns=tuple(orjson.loads(values["columns"])),
        rows=values["rows"],
        images_total=values["images_total"],
        batches=values["batches"],
        created_at=values["created_at"],
        batches_done=values["batches_done"],
        rows_done=values["rows_done"],
        images_done=values["images_done"],
        images_failed=values["images_failed"],
        callback_url=values["callback_url"],
        request_id=values["request_id"],
        error=values["error"],
        started_at=values["started_at"],
        finished_at=values["finished_at"],
    )

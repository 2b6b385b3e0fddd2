"""The hot-path point reads (`Lookups`): through asyncpg with no SQLAlchemy in between on
PostgreSQL, through a read-only unit of work elsewhere (SQLite, and the unit tests' fakes).

Every authenticated GET looks up its token, GET /products/{id} on a cache miss its
product, and every API process asks four times a second which imports are ready to finish:
through a read-only unit of work these cost several times the CPU of the same select on a
bare asyncpg pool (docs/architecture.md). The SQL is written by hand but maps through the
repositories' own row functions, and an integration test holds both implementations to
equal results.
"""

from __future__ import annotations

from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.image_jobs import job_from
from stockroom.db.products import image_from_prefixed, prefixed_image_columns, product_from
from stockroom.db.users import user_from
from stockroom.domain.models import ImageJob, ImportStatus, OwnedImage, Product, User
from stockroom.domain.ports import UnitOfWorkFactory

# The columns and order of db/products.py's _GET_PRODUCT: one row per image (or one with
# NULL img_ columns for a product without images), images by position then id.
_PRODUCT = f"""
SELECT p.id, p.user_id, p.sku, p.product_name, p.product_description, p.product_price,
       p.created_at, p.updated_at, {prefixed_image_columns("i.")}
FROM products AS p
LEFT OUTER JOIN product_images AS i ON i.product_id = p.id
WHERE p.id = $1
ORDER BY i.position, i.id
"""  # noqa: S608 (the only interpolation is our table's column names)
# db/users.py's _BY_TOKEN_HASH: every column of users (token_hash is unique).
_USER_BY_HASH = """
SELECT u.id, u.email, u.name, u.is_admin, u.created_at
FROM users AS u
JOIN api_tokens AS t ON t.user_id = u.id
WHERE t.token_hash = $1
"""


# One image with its owner, in the columns of _PRODUCT's img_ side (for the live status).
_IMAGE = f"""
SELECT p.user_id, {prefixed_image_columns("i.")}
FROM product_images AS i
JOIN products AS p ON p.id = i.product_id
WHERE i.id = $1 AND i.product_id = $2
"""  # noqa: S608 (the only interpolation is our table's column names)
_JOB = "SELECT * FROM image_jobs WHERE id = $1"
# db/imports.py's `settling`: the running imports whose every batch is applied.
_SETTLING_IMPORTS = f"""
SELECT id FROM imports
WHERE status = '{ImportStatus.PROCESSING.value}' AND batches_done >= batches
"""  # noqa: S608 (the only interpolation is our enum's constant value)


class AsyncpgLookups:
    """`Lookups` on the process's asyncpg pool (shared with the job transitions)."""

    def __init__(self, pool: LazyAsyncpgPool) -> None:
        self._pool = pool

    async def product(self, product_id: int) -> Product | None:
        rows = await self._pool.fetch(_PRODUCT, product_id)
        if not rows:
            return None
        images = tuple(image_from_prefixed(row) for row in rows if row["img_id"] is not None)
        return product_from(rows[0], images)

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        row = await self._pool.fetchrow(_USER_BY_HASH, token_hash)
        return user_from(row) if row is not None else None

    async def image(self, product_id: int, image_id: int) -> OwnedImage | None:
        row = await self._pool.fetchrow(_IMAGE, image_id, product_id)
        return OwnedImage(row["user_id"], image_from_prefixed(row)) if row is not None else None

    async def job(self, job_id: str) -> ImageJob | None:
        row = await self._pool.fetchrow(_JOB, job_id)
        return job_from(row) if row is not None else None

    async def settling_imports(self) -> list[str]:
        return [row["id"] for row in await self._pool.fetch(_SETTLING_IMPORTS)]


class UnitOfWorkLookups:
    """`Lookups` through the repositories of a read-only unit of work."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def product(self, product_id: int) -> Product | None:
        async with self._uow_factory() as uow:
            return await uow.products.get(product_id)

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        async with self._uow_factory() as uow:
            return await uow.users.by_token_hash(token_hash)

    async def image(self, product_id: int, image_id: int) -> OwnedImage | None:
        async with self._uow_factory() as uow:
            product = await uow.products.get(product_id)
        if product is None:
            return None
        found = next((image for image in product.images if image.id == image_id), None)
        return OwnedImage(product.user_id, found) if found is not None else None

    async def job(self, job_id: str) -> ImageJob | None:
        async with self._uow_factory() as uow:
            return await uow.image_jobs.get(job_id)

    async def settling_imports(self) -> list[str]:
        async with self._uow_factory() as uow:
            return await uow.imports.settling()

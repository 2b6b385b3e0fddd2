"""The writes that admit new work (`Admissions`): a product with its images, a standalone
job, each with its outbox rows. On PostgreSQL, one statement each on the bare asyncpg pool;
elsewhere (SQLite, the unit tests' fakes) through a unit of work.

Through the unit of work a product with its images is a transaction of six round trips
(BEGIN, the product, its images, their jobs, their outbox rows, COMMIT), a job one of four,
and on these paths each round trip costs more CPU than the statement it carries. One
statement with data-modifying CTEs writes the same rows atomically, without BEGIN or
COMMIT. The SQL is written by hand; tests/integration/test_admissions_contract.py holds
both implementations to the same rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import asyncpg

from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.image_jobs import job_row
from stockroom.db.products import product_from
from stockroom.domain.errors import SkuTaken
from stockroom.domain.image_jobs import ACTOR_BY_QUEUE
from stockroom.domain.jobs import write_job
from stockroom.domain.models import ImageJob, ImageStatus, JobKind, JobStatus, Product
from stockroom.domain.ports import UnitOfWorkFactory
from stockroom.domain.products import pending_images, write_new_product
from stockroom.domain.queries import NewProduct

# $1 user, $2 sku, $3 name, $4 description, $5 price, $6 now, $7 image URLs in order,
# $8 their job ids, $9 request id, $10 queue, $11 actor. The images' position is their
# index in $7; each job takes the id at its image's index in $8.
_CREATE = f"""
WITH p AS (
    INSERT INTO products (user_id, sku, product_name, product_description, product_price,
                          created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $6)
    RETURNING *
), i AS (
    INSERT INTO product_images (product_id, position, source_url, status, created_at,
                                updated_at)
    SELECT p.id, u.ordinality - 1, u.url, '{ImageStatus.PENDING.value}', $6, $6
    FROM p, unnest($7::text[]) WITH ORDINALITY AS u(url, ordinality)
    RETURNING id, position
), j AS (
    INSERT INTO image_jobs (id, user_id, kind, product_image_id, product_id, source_url,
                            status, request_id, queue, created_at)
    SELECT ($8::text[])[i.position + 1], p.user_id, '{JobKind.PRODUCT_IMAGE.value}', i.id,
           p.id, ($7::text[])[i.position + 1], '{JobStatus.QUEUED.value}', $9, $10, $6
    FROM p, i
    RETURNING id
), o AS (
    INSERT INTO outbox (job_id, actor, queue, request_id, created_at)
    SELECT j.id, $11, $10, $9, $6 FROM j
)
SELECT p.*, ARRAY(SELECT i.id FROM i ORDER BY i.position) AS image_ids FROM p
"""  # noqa: S608 (the only interpolations are our own enum values)


@functools.cache
def _submit(columns: tuple[str, ...]) -> str:
    """A job's row (`columns`, db/image_jobs.py's job_row) and its outbox row; the last
    placeholder is the outbox row's actor."""
    values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    return f"""
WITH j AS (
    INSERT INTO image_jobs ({", ".join(columns)}) VALUES ({values})
    RETURNING id, queue, request_id, created_at
)
INSERT INTO outbox (job_id, actor, queue, request_id, created_at)
SELECT j.id, ${len(columns) + 1}, j.queue, j.request_id, j.created_at FROM j
"""  # noqa: S608 (the only interpolations are our own column names and placeholders)


class AsyncpgAdmissions:
    def __init__(self, pool: LazyAsyncpgPool, on_outbox_commit: Callable[[], None]) -> None:
        self._pool = pool
        self._on_outbox_commit = on_outbox_commit  # wakes the relay, as a unit of work does

    async def create_product(
        self,
        draft: NewProduct,
        owner_id: int,
        job_ids: Sequence[str],
        queue: str,
        request_id: str | None,
    ) -> Product:
        urls = list(draft.product_images)
        try:
            row = await self._pool.fetchrow(
                _CREATE,
                owner_id,
                draft.sku,
                draft.product_name,
                draft.product_description,
                draft.product_price,
                datetime.now(UTC),
                urls,
                list(job_ids),
                request_id,
                queue,
                ACTOR_BY_QUEUE[queue],
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "uq_products_user_id_sku":
                raise SkuTaken() from exc
            raise
        if urls:
            self._on_outbox_commit()
        return product_from(row, pending_images(row["image_ids"], urls))

    async def submit_job(self, job: ImageJob) -> None:
        row = job_row(job)
        await self._pool.execute(_submit(tuple(row)), *row.values(), ACTOR_BY_QUEUE[job.queue])
        self._on_outbox_commit()


class UnitOfWorkAdmissions:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def create_product(
        self,
        draft: NewProduct,
        owner_id: int,
        job_ids: Sequence[str],
        queue: str,
        request_id: str | None,
    ) -> Product:
        async with self._uow_factory() as uow:
            product = await write_new_product(uow, draft, owner_id, job_ids, queue, request_id)
            await uow.commit()
        return product

    async def submit_job(self, job: ImageJob) -> None:
        async with self._uow_factory() as uow:
            await write_job(uow, job)
            await uow.commit()

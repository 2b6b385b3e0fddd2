"""New work's rows: `AsyncpgAdmissions` (one statement each on the bare asyncpg pool) writes
exactly what the unit-of-work implementation writes, on PostgreSQL; a product's answer is
what a read then finds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from tests.support.databases import empty_tables_sql

from stockroom.db.admissions import AsyncpgAdmissions, UnitOfWorkAdmissions
from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.tables import image_jobs, outbox, product_images, products
from stockroom.domain import users
from stockroom.domain.errors import SkuTaken
from stockroom.domain.image_jobs import IMAGES_QUEUE, IMPORTS_QUEUE, JOBS_QUEUE
from stockroom.domain.models import ImageJob, JobKind, JobStatus
from stockroom.domain.ports import Admissions
from stockroom.domain.queries import NewProduct
from stockroom.services import Services

pytestmark = pytest.mark.postgres

URLS = ("https://images.example.com/a.jpg", "https://images.example.com/b.png", "https://x.test/c")

# Columns that differ between two runs by nature: generated ids, clocks.
_RUN_SPECIFIC = {"id", "user_id", "product_id", "product_image_id", "job_id", "created_at"}
_RUN_SPECIFIC |= {"updated_at"}


def _comparable(row: Any) -> dict[str, Any]:
    return {k: v for k, v in row._mapping.items() if k not in _RUN_SPECIFIC}


async def play(services: Services, admissions: Admissions) -> list[object]:
    """Three products (with images on each queue, and without), a taken sku, two standalone
    jobs; what the answers and the committed rows were."""
    async with services.engine.begin() as connection:
        for statement in empty_tables_sql("postgresql"):
            await connection.exec_driver_sql(statement)
    owner, _ = await users.create_user(services.uow(), email="a@example.com")
    drafts = [
        (NewProduct("Lamp", Decimal("19.90"), "ü\nline", URLS, sku="L-1"), IMAGES_QUEUE),
        (NewProduct("Bare", Decimal("0"), None, ()), IMAGES_QUEUE),
        (NewProduct("Rug", Decimal("99999999.99"), "", URLS[:1], sku="R"), IMPORTS_QUEUE),
    ]
    seen: list[object] = []
    for draft, queue in drafts:
        job_ids = [uuid.uuid4().hex for _ in draft.product_images]
        product = await admissions.create_product(draft, owner.id, job_ids, queue, "req-1")
        async with services.read_uow() as uow:
            read = await uow.products.get(product.id)
        seen.append(product == read)
        seen.append([str(product.product_price), product.created_at.utcoffset()])
        async with services.engine.connect() as conn:
            jobs = (await conn.execute(select(image_jobs).order_by(image_jobs.c.created_at))).all()
        by_id = {row.id: row for row in jobs}
        seen.append([by_id[job_id].product_image_id for job_id in job_ids])
        seen.append([image.id for image in product.images])
    taken = drafts[0][0]
    with pytest.raises(SkuTaken):
        await admissions.create_product(taken, owner.id, ["x"] * 3, IMAGES_QUEUE, None)
    operations: list[dict[str, object]] = [{"op": "resize", "width": 800, "height": 800}]
    for url, key in [(URLS[0], None), (None, "uploads/ab")]:
        job = ImageJob(
            uuid.uuid4().hex,
            owner.id,
            JobKind.STANDALONE,
            JobStatus.QUEUED,
            JOBS_QUEUE,
            operations,
            datetime.now(UTC),
            callback_url="https://hooks.example.com/x",
            request_id="req-2",
            source_url=url,
            source_key=key,
        )
        await admissions.submit_job(job)
    async with services.engine.connect() as conn:
        for table, order in [
            (products, [products.c.id]),
            (product_images, [product_images.c.id]),
            (image_jobs, [image_jobs.c.queue, image_jobs.c.source_url]),
            (outbox, [outbox.c.id]),
        ]:
            rows = (await conn.execute(select(table).order_by(*order))).all()
            seen.append([_comparable(row) for row in rows])
    return seen


async def test_asyncpg_admissions_write_what_the_unit_of_work_writes(
    pg_services: Services, postgres_url: str
) -> None:
    expected = await play(pg_services, UnitOfWorkAdmissions(pg_services.uow))
    woken: list[None] = []
    pool = LazyAsyncpgPool(postgres_url, 2)
    try:
        got = await play(pg_services, AsyncpgAdmissions(pool, lambda: woken.append(None)))
    finally:
        await pool.close()

    assert got == expected
    answers = expected[:12]  # four entries per product
    assert answers[0::4] == [True, True, True]  # each answer is what a read then finds
    assert answers[2::4] == answers[3::4]  # each job points at its image, in order
    outbox_rows = expected[-1]
    assert isinstance(outbox_rows, list)
    assert len(outbox_rows) == 6  # three images, then one, none for "Bare"; two jobs
    assert len(woken) == 4  # once per product with images, once per job

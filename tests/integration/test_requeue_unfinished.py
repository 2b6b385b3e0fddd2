"""`stockroom jobs requeue`: jobs RabbitMQ lost are queued again through the outbox, on
both engines; finished jobs and jobs that moved recently are left alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update
from tests.support.products import new_product

from stockroom.db.tables import image_jobs as image_jobs_table
from stockroom.db.tables import outbox
from stockroom.domain import image_jobs, users
from stockroom.domain.models import ImageResult
from stockroom.domain.queries import NewProduct
from stockroom.services import Services


async def test_unfinished_jobs_idle_since_the_cutoff_are_queued_again(
    bare_services: Services,
) -> None:
    services = bare_services
    user, _ = await users.create_user(
        services.uow(), email=f"lost-{uuid.uuid4().hex[:8]}@example.com", name="L"
    )
    urls = tuple(f"https://img.example.com/{n}.jpg" for n in range(3))
    draft = NewProduct(product_name="Lost", product_price=Decimal("1"), product_images=urls)
    product = await new_product(services.uow(), user, draft)
    async with services.engine.begin() as conn:  # published, then lost by the broker
        rows = await conn.execute(
            select(image_jobs_table.c.id).where(image_jobs_table.c.product_id == product.id)
        )
        mine = sorted(row.id for row in rows)
        await conn.execute(
            update(outbox).where(outbox.c.job_id.in_(mine)).values(published_at=datetime.now(UTC))
        )
    queued, started, finished = mine
    assert await image_jobs.start_job(services.transitions, services.uow(), started)
    done = await image_jobs.start_job(services.transitions, services.uow(), finished)
    assert done is not None
    result = ImageResult("img/ab/c.jpg", "https://cdn/c.jpg", 10, 10, 100, 50)
    await image_jobs.succeed_job(services.transitions, done, result)

    now = datetime.now(UTC)
    await image_jobs.requeue_unfinished(services.uow(), older_than=now - timedelta(hours=1))
    assert await pending_outbox_rows(services, mine) == []
    await image_jobs.requeue_unfinished(services.uow(), older_than=now + timedelta(minutes=1))
    assert await pending_outbox_rows(services, mine) == sorted([queued, started])


async def pending_outbox_rows(services: Services, job_ids: list[str]) -> list[str]:
    """Unpublished outbox rows of these jobs (the database is shared with other tests)."""
    statement = select(outbox.c.job_id).where(
        outbox.c.job_id.in_(job_ids), outbox.c.published_at.is_(None)
    )
    async with services.engine.connect() as conn:
        return sorted(row.job_id for row in await conn.execute(statement))

"""Creating a product writes its images, jobs and outbox rows in one multi-row INSERT each:
on both engines every image keeps its position and every job points at its own image."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from tests.support.products import new_product

from stockroom.db.tables import image_jobs, outbox, product_images
from stockroom.domain import users
from stockroom.domain.queries import NewProduct
from stockroom.services import Services


async def test_each_job_points_at_its_own_image_in_position_order(
    bare_services: Services,
) -> None:
    user, _ = await users.create_user(bare_services.uow(), email="rows@example.com", name="R")
    # Shuffled names, so an id order that followed anything but the input would show.
    urls = tuple(f"https://img.example.com/{name}.jpg" for name in "kdqahxbmzcjw")
    draft = NewProduct(product_name="Rows", product_price=Decimal("1"), product_images=urls)

    product = await new_product(bare_services.uow(), user, draft)

    assert [image.source_url for image in product.images] == list(urls)
    async with bare_services.engine.connect() as conn:
        images = {
            row.id: (row.position, row.source_url)
            for row in await conn.execute(
                select(product_images).where(product_images.c.product_id == product.id)
            )
        }
        jobs = (
            await conn.execute(select(image_jobs).where(image_jobs.c.product_id == product.id))
        ).all()
        job_ids = [job.id for job in jobs]
        queued = (
            await conn.execute(select(outbox.c.job_id).where(outbox.c.job_id.in_(job_ids)))
        ).scalars()
        queued_ids = sorted(queued)  # the session's database holds other tests' rows too
    assert sorted(position for position, _ in images.values()) == list(range(len(urls)))
    assert len(jobs) == len(urls)
    for job in jobs:
        position, source_url = images[job.product_image_id]
        assert job.source_url == source_url == urls[position]
    assert queued_ids == sorted(job_ids)  # one message per job, none twice

"""A PATCH or DELETE racing a job's start on the same product waits, never deadlocks
(PostgreSQL: both now take the job, image and product rows in that order)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from tests.support.products import new_product

from stockroom.domain import products, users
from stockroom.domain.queries import NewProduct, ProductPatch
from stockroom.services import Services

pytestmark = pytest.mark.postgres
ROUNDS = 30


async def test_patching_images_while_their_jobs_start_never_deadlocks(
    pg_services: Services,
) -> None:
    user, _ = await users.create_user(pg_services.uow(), email="racer@example.com")
    for round_ in range(ROUNDS):
        urls = tuple(f"https://img.example.com/{round_}/{n}.jpg" for n in range(4))
        draft = NewProduct("Lamp", Decimal("5"), product_images=urls)
        product = await new_product(pg_services.uow(), user, draft)
        async with pg_services.uow() as uow:
            jobs = await uow.image_jobs.search(user_id=user.id, limit=4)
        patch = ProductPatch(product_images=(urls[0], "https://img.example.com/new.jpg"))
        change = (
            products.update_product(pg_services.uow(), user, product.id, patch)
            if round_ % 2
            else products.delete_product(pg_services.uow(), user, product.id)
        )

        await asyncio.gather(change, *(pg_services.transitions.start(job.id) for job in jobs))

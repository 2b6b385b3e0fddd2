"""`stockroom jobs requeue`: jobs RabbitMQ lost are queued again through the outbox, on
both engines; finished jobs and jobs that moved recently are left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from tests.conftest import bootstrapped

from stockroom.bootstrap import Services
from stockroom.domain import image_jobs, products, users
from stockroom.domain.models import ImageResult
from stockroom.domain.queries import NewProduct


@pytest.fixture
async def bare_services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """The adapters without the app: no embedded worker or relay touches the rows."""
    async with bootstrapped(database_url, tmp_path / "media") as services:
        yield services


async def test_unfinished_jobs_idle_since_the_cutoff_are_queued_again(
    bare_services: Services,
) -> None:
    services = bare_services
    user, _ = await users.create_user(services.uow(), email="lost@example.com", name="L")
    urls = tuple(f"https://img.example.com/{n}.jpg" for n in range(3))
    draft = NewProduct(product_name="Lost", product_price=Decimal("1"), product_images=urls)
    await products.create_product(services.uow(), user, draft)
    async with services.uow() as uow:  # published, then lost by the broker
        published = await uow.outbox.claim(100)
        await uow.outbox.mark_published([message.id for message in published])
        await uow.commit()
    queued, started, finished = [message.job_id for message in published]
    assert await image_jobs.start_job(services.transitions, services.uow(), started)
    done = await image_jobs.start_job(services.transitions, services.uow(), finished)
    assert done is not None
    result = ImageResult("img/ab/c.jpg", "https://cdn/c.jpg", 10, 10, 100, 50)
    await image_jobs.succeed_job(services.transitions, done, result, None)

    now = datetime.now(UTC)
    assert (
        await image_jobs.requeue_unfinished(services.uow(), older_than=now - timedelta(hours=1))
        == 0
    )
    assert (
        await image_jobs.requeue_unfinished(services.uow(), older_than=now + timedelta(minutes=1))
        == 2
    )

    async with services.uow() as uow:
        again = await uow.outbox.claim(100)
    assert sorted(message.job_id for message in again) == sorted([queued, started])

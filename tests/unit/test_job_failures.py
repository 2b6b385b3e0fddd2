"""What a failed image tells its owner: the code and a fixed message, never the detail."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stockroom.db.job_transitions import UnitOfWorkJobTransitions
from stockroom.domain import image_jobs, products
from stockroom.domain.errors import BlockedAddress, ImageError, SourceUnreachable
from stockroom.domain.models import JobStatus
from stockroom.domain.queries import NewProduct
from tests.unit.fakes import FakeDatabase

INTERNAL = "cdn.internal resolves to 10.0.3.7, which is not a public address"


@pytest.mark.parametrize(
    ("error", "final"),
    [(BlockedAddress(INTERNAL), True), (SourceUnreachable(f"cannot resolve {INTERNAL}"), False)],
)
async def test_a_failure_records_the_code_and_title_not_the_detail(
    error: ImageError, final: bool
) -> None:
    db = FakeDatabase()
    async with db.uow() as uow:
        user = await uow.users.add("alice@example.com", None, False)
        await uow.commit()
    draft = NewProduct("Lamp", Decimal("5"), product_images=("https://cdn.internal/a.jpg",))
    product = (await products.create_product(db.uow(), db.admissions(), user, draft)).product
    (job_id,) = db.tables.jobs
    job = await image_jobs.start_job(UnitOfWorkJobTransitions(db.uow), db.uow(), job_id)
    assert job is not None

    await image_jobs.fail_job(db.uow(), job, error, final=final)

    stored = db.tables.jobs[job_id]
    assert stored.error == error.title
    assert stored.error_code == error.code
    assert "10.0.3.7" not in (stored.error or "")
    assert stored.status is (JobStatus.FAILED if final else JobStatus.PROCESSING)
    async with db.uow() as uow:
        image = (await uow.products.get(product.id)).images[0]  # type: ignore[union-attr]
    if final:
        assert image.error == error.title
        assert "10.0.3.7" not in (image.error or "")

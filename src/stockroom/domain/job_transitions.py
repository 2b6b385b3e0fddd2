"""A job's start and success through the repositories of a unit of work: the embedded
(SQLite) implementation of `JobTransitions`, and the one unit tests use over their fakes.
PostgreSQL has db/job_transitions.py, one statement each, held to the same results by
tests/integration/test_job_transitions_contract.py."""

from __future__ import annotations

from stockroom.domain.models import ImageResult, ImageStatus
from stockroom.domain.ports import StartedJob, UnitOfWorkFactory


class UnitOfWorkJobTransitions:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def start(self, job_id: str) -> StartedJob | None:
        async with self._uow_factory() as uow:
            job = await uow.image_jobs.start(job_id)
            if job is None:
                return None
            product_id = None
            if job.product_image_id is not None:
                product_id = await uow.products.set_image_status(
                    job.product_image_id, ImageStatus.PROCESSING
                )
            await uow.commit()
        return StartedJob(job, product_id)

    async def succeed(
        self, job_id: str, product_image_id: int | None, result: ImageResult
    ) -> tuple[bool, int | None]:
        async with self._uow_factory() as uow:
            if not await uow.image_jobs.mark_succeeded(job_id, result):
                return False, None
            product_id = None
            if product_image_id is not None:
                product_id = await uow.products.record_image_result(product_image_id, result)
            await uow.commit()
        return True, product_id

    async def close(self) -> None:
        return None

"""A job's start and success (`JobTransitions`): on PostgreSQL one statement each, on a bare
asyncpg pool; elsewhere (SQLite, the unit tests' fakes) through a unit of work's repositories.

Through the unit of work each would be a transaction of five round trips (BEGIN, the job,
the image, the product's updated_at, COMMIT); as one statement of data-modifying CTEs, in
autocommit, it is one round trip and a fraction of the CPU (docs/architecture.md). The
statements write exactly what `UnitOfWorkJobTransitions` writes through the repositories,
rows map through db/image_jobs.py's `job_from`, and
tests/integration/test_job_transitions_contract.py holds the two to equal results.
"""

from __future__ import annotations

from datetime import UTC, datetime

from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.image_jobs import job_from
from stockroom.domain.events import DomainEvent, job_events, transition_events
from stockroom.domain.models import ImageResult, ImageStatus, JobStatus, WebhookMessage
from stockroom.domain.ports import RunEffects, StartedJob, UnitOfWorkFactory
from stockroom.domain.webhook_delivery import queue_webhook

_UNFINISHED = f"('{JobStatus.QUEUED.value}', '{JobStatus.PROCESSING.value}')"

# $1 job id, $2 now. Locks the job row, then the image row, then the product row: the order
# of the unit of work's path.
_START = f"""
WITH job AS (
    UPDATE image_jobs
    SET status = '{JobStatus.PROCESSING.value}', attempts = attempts + 1, started_at = $2
    WHERE id = $1 AND status IN {_UNFINISHED}
    RETURNING *
), image AS (
    UPDATE product_images
    SET status = '{ImageStatus.PROCESSING.value}', error = NULL, error_code = NULL,
        updated_at = $2
    WHERE id = (SELECT product_image_id FROM job)
    RETURNING product_id
), product AS (
    UPDATE products SET updated_at = $2
    WHERE id = (SELECT product_id FROM image)
    RETURNING id
)
SELECT job.*, (SELECT id FROM product) AS touched_product_id FROM job
"""  # noqa: S608 (the only interpolations are our enums' constant values)

# $1 job id, $2 now, $3 product image id (or NULL), $4.. the result.
_SUCCEED = f"""
WITH job AS (
    UPDATE image_jobs
    SET status = '{JobStatus.SUCCEEDED.value}', output_key = $4, output_url = $5,
        width = $6, height = $7, bytes_in = $8, bytes_out = $9,
        error = NULL, error_code = NULL, finished_at = $2
    WHERE id = $1 AND status IN {_UNFINISHED}
    RETURNING id
), image AS (
    UPDATE product_images
    SET status = '{ImageStatus.READY.value}', compressed_url = $5, output_key = $4,
        width = $6, height = $7, bytes_in = $8, bytes_out = $9,
        error = NULL, error_code = NULL, updated_at = $2
    WHERE id = $3 AND EXISTS (SELECT 1 FROM job)
    RETURNING product_id
), product AS (
    UPDATE products SET updated_at = $2
    WHERE id = (SELECT product_id FROM image)
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM job) AS written, (SELECT id FROM product) AS touched_product_id
"""  # noqa: S608 (the only interpolations are our enums' constant values)


class AsyncpgJobTransitions:
    """`JobTransitions` on the process's asyncpg pool (shared with the lookups). A success
    that queues a webhook goes through `with_webhooks`, a unit of work's twin: the webhook's
    rows commit with the result, and such jobs are the few with a callback URL."""

    def __init__(
        self,
        pool: LazyAsyncpgPool,
        with_webhooks: UnitOfWorkJobTransitions,
        effects: RunEffects | None = None,
    ) -> None:
        self._pool = pool
        self._with_webhooks = with_webhooks
        self._effects = effects  # what a unit of work runs after its commit; here, after each

    async def start(self, job_id: str) -> StartedJob | None:
        row = await self._pool.fetchrow(_START, job_id, datetime.now(UTC))
        if row is None:
            return None
        started = StartedJob(job_from(row), row["touched_product_id"])
        await self._announce(job_events(started.job, started.product_id))
        return started

    async def _announce(self, events: list[DomainEvent]) -> None:
        if events and self._effects is not None:
            await self._effects(events)

    async def succeed(
        self,
        job_id: str,
        product_image_id: int | None,
        result: ImageResult,
        webhook: WebhookMessage | None = None,
    ) -> tuple[bool, int | None]:
        if webhook is not None:
            return await self._with_webhooks.succeed(job_id, product_image_id, result, webhook)
        row = await self._pool.fetchrow(
            _SUCCEED,
            job_id,
            datetime.now(UTC),
            product_image_id,
            result.output_key,
            result.output_url,
            result.width,
            result.height,
            result.bytes_in,
            result.bytes_out,
        )
        assert row is not None  # the outer SELECT always returns one row
        written, product_id = bool(row["written"]), row["touched_product_id"]
        if written:
            await self._announce(transition_events(job_id, product_image_id, product_id))
        return written, product_id


class UnitOfWorkJobTransitions:
    """`JobTransitions` through the repositories of a unit of work, one per transition."""

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
            for event in job_events(job, product_id):
                uow.record(event)
            await uow.commit()
        return StartedJob(job, product_id)

    async def succeed(
        self,
        job_id: str,
        product_image_id: int | None,
        result: ImageResult,
        webhook: WebhookMessage | None = None,
    ) -> tuple[bool, int | None]:
        async with self._uow_factory() as uow:
            if not await uow.image_jobs.mark_succeeded(job_id, result):
                return False, None
            product_id = None
            if product_image_id is not None:
                product_id = await uow.products.record_image_result(product_image_id, result)
            if webhook is not None:
                await queue_webhook(uow, webhook)
            for event in transition_events(job_id, product_image_id, product_id):
                uow.record(event)
            await uow.commit()
        return True, product_id

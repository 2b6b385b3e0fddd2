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

import asyncpg

from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.image_jobs import job_from
from stockroom.db.products import image_from_prefixed, prefixed_image_columns
from stockroom.domain.events import DomainEvent, job_events, transition_events
from stockroom.domain.models import (
    ImageJob,
    ImageResult,
    ImageStatus,
    JobStatus,
    OwnedImage,
    WebhookMessage,
)
from stockroom.domain.ports import RunEffects, StartedJob, UnitOfWorkFactory
from stockroom.domain.webhook_delivery import queue_webhook

_UNFINISHED = f"('{JobStatus.QUEUED.value}', '{JobStatus.PROCESSING.value}')"

_IMAGE_COLUMNS = prefixed_image_columns()
# Each statement returns the rows as it left them (the job's columns, the image's as `img_`
# columns, the product's id and owner): its live-status events carry them, read nothing.
_CHANGED = """
SELECT job.*, product.id AS touched_product_id, product.user_id AS owner_id, image.*
FROM job LEFT JOIN image ON true LEFT JOIN product ON true
"""

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
    RETURNING product_id AS img_product_id, {_IMAGE_COLUMNS}
), product AS (
    UPDATE products SET updated_at = $2
    WHERE id = (SELECT img_product_id FROM image)
    RETURNING id, user_id
)
{_CHANGED}"""  # noqa: S608 (the only interpolations are our enums' constant values)

# $1 job id, $2 now, $3 product image id (or NULL), $4.. the result. No row: not written.
_SUCCEED = f"""
WITH job AS (
    UPDATE image_jobs
    SET status = '{JobStatus.SUCCEEDED.value}', output_key = $4, output_url = $5,
        width = $6, height = $7, bytes_in = $8, bytes_out = $9,
        error = NULL, error_code = NULL, finished_at = $2
    WHERE id = $1 AND status IN {_UNFINISHED}
    RETURNING *
), image AS (
    UPDATE product_images
    SET status = '{ImageStatus.READY.value}', compressed_url = $5, output_key = $4,
        width = $6, height = $7, bytes_in = $8, bytes_out = $9,
        error = NULL, error_code = NULL, updated_at = $2
    WHERE id = $3 AND EXISTS (SELECT 1 FROM job)
    RETURNING product_id AS img_product_id, {_IMAGE_COLUMNS}
), product AS (
    UPDATE products SET updated_at = $2
    WHERE id = (SELECT img_product_id FROM image)
    RETURNING id, user_id
)
{_CHANGED}"""  # noqa: S608 (the only interpolations are our enums' constant values)


def _changed(
    row: asyncpg.Record, image_id: int | None
) -> tuple[ImageJob, int | None, list[DomainEvent]]:
    """The job, the product touched and the events of a transition on `image_id`."""
    job = job_from(row)
    product_id = row["touched_product_id"]
    image = None
    if product_id is not None:
        image = OwnedImage(row["owner_id"], image_from_prefixed(row))
    events = transition_events(job.id, image_id, product_id, job=job, image=image)
    return job, product_id, events


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
        job, product_id, events = _changed(row, row["product_image_id"])
        await self._announce(events)
        return StartedJob(job, product_id)

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
        if row is None:
            return False, None
        _job, product_id, events = _changed(row, product_image_id)
        await self._announce(events)
        return True, product_id


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

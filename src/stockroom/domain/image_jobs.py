"""Image jobs: queued in the same transaction as what they belong to (the outbox), then
started, finished or failed by the pipeline, and redriven by an operator."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from stockroom.domain.errors import DeadLetterNotFound, ImageError, JobNotFound
from stockroom.domain.events import job_events
from stockroom.domain.models import (
    ImageJob,
    ImageResult,
    ImageStatus,
    JobKind,
    JobStatus,
    User,
)
from stockroom.domain.ports import JobTransitions, UnitOfWork
from stockroom.domain.users import require_admin
from stockroom.domain.views import job_view
from stockroom.domain.webhook_delivery import WEBHOOKS_QUEUE, new_webhook, queue_webhook

# A queue per kind of work, so a flood of one never starves another; an actor per queue.
PROCESS_IMAGE = "process_image"
IMAGES_QUEUE = "images"  # product images
PROCESS_JOB = "process_job"
JOBS_QUEUE = "jobs"  # standalone image jobs (POST /jobs)
PROCESS_IMPORT_IMAGE = "process_import_image"
IMPORTS_QUEUE = "imports"  # CSV imports: their product images (and their batches of rows)
ACTOR_BY_QUEUE = {
    IMAGES_QUEUE: PROCESS_IMAGE,
    JOBS_QUEUE: PROCESS_JOB,
    IMPORTS_QUEUE: PROCESS_IMPORT_IMAGE,
}
QUEUES = tuple(ACTOR_BY_QUEUE)  # the queues of image work, one image actor each
ALL_QUEUES = (*QUEUES, WEBHOOKS_QUEUE)  # what `stockroom worker` consumes by default
SUPERSEDED = "superseded: the product image was removed or replaced before processing"


def new_job_id() -> str:
    return uuid.uuid4().hex


async def queue_product_images(
    uow: UnitOfWork,
    *,
    user_id: int,
    product_id: int,
    images: Sequence[tuple[int, str]],
    request_id: str | None,
    queue: str = IMAGES_QUEUE,
    job_ids: Sequence[str] | None = None,
) -> list[str]:
    """Add a job and an outbox row per (image_id, url), inside the caller's transaction;
    on `queue` (a CSV import's images go on their own, apart from interactive ones). The
    jobs take `job_ids` in order if given, new ids otherwise."""
    now = datetime.now(UTC)
    ids = list(job_ids) if job_ids is not None else [new_job_id() for _ in images]
    jobs = [
        ImageJob(
            id=job_id,
            user_id=user_id,
            kind=JobKind.PRODUCT_IMAGE,
            status=JobStatus.QUEUED,
            queue=queue,
            operations=[],
            created_at=now,
            product_image_id=image_id,
            product_id=product_id,
            source_url=url,
            request_id=request_id,
        )
        for job_id, (image_id, url) in zip(ids, images, strict=True)
    ]
    await uow.image_jobs.add_many(jobs)
    await uow.outbox.add_many(ids, ACTOR_BY_QUEUE[queue], queue, request_id)
    return ids


async def start_job(transitions: JobTransitions, uow: UnitOfWork, job_id: str) -> ImageJob | None:
    """Claim a delivery of the job; None means there is nothing (more) to do. `uow` is
    only used when the job's image was removed or replaced meanwhile (superseded)."""
    started = await transitions.start(job_id)
    if started is None:
        return None
    job = started.job
    if job.kind is JobKind.PRODUCT_IMAGE and job.product_image_id is None:
        async with uow:
            await uow.image_jobs.mark_failed(job_id, SUPERSEDED, None, None)
            await uow.commit()
        return None
    return job


async def succeed_job(transitions: JobTransitions, job: ImageJob, result: ImageResult) -> bool:
    """Write the result once; a job whose image row is gone writes nothing to products.
    A standalone job with a callback URL queues its `job.succeeded` webhook with it."""
    webhook = None
    if job.callback_url is not None:
        done = replace(
            job,
            status=JobStatus.SUCCEEDED,
            output_key=result.output_key,
            output_url=result.output_url,
            width=result.width,
            height=result.height,
            bytes_in=result.bytes_in,
            bytes_out=result.bytes_out,
            error=None,
            error_code=None,
            finished_at=datetime.now(UTC),
        )
        webhook = new_webhook(
            job.user_id, "job.succeeded", job.callback_url, job_view(done), job_id=job.id
        )
    written, _product_id = await transitions.succeed(job.id, job.product_image_id, result, webhook)
    return written


async def fail_job(
    uow: UnitOfWork,
    job: ImageJob,
    error: ImageError,
    *,
    final: bool,
) -> None:
    """Record an attempt's failure; a final one fails the job and dead-letters it.

    Users read the code and its fixed title, never the detail: "x resolves to 10.0.3.7"
    would map the worker network's DNS for them. The caller logs the detail."""
    async with uow:
        if final:
            dead_lettered_at = datetime.now(UTC)
            if not await uow.image_jobs.mark_failed(
                job.id, error.title, error.code, dead_lettered_at
            ):
                return
            if job.callback_url is not None:
                failed = replace(
                    job,
                    status=JobStatus.FAILED,
                    error=error.title,
                    error_code=error.code,
                    finished_at=dead_lettered_at,
                )
                await queue_webhook(
                    uow,
                    new_webhook(
                        job.user_id, "job.failed", job.callback_url, job_view(failed), job_id=job.id
                    ),
                )
        else:
            await uow.image_jobs.record_failed_attempt(job.id, error.title, error.code)
        product_id = None
        if job.product_image_id is not None:
            product_id = (
                await uow.products.record_image_failure(
                    job.product_image_id, error.title, error.code
                )
                if final
                else await uow.products.set_image_status(job.product_image_id, ImageStatus.PENDING)
            )
        for event in job_events(job, product_id):
            uow.record(event)
        await uow.commit()


async def get_job(uow: UnitOfWork, actor: User, job_id: str) -> ImageJob:
    async with uow:
        job = await uow.image_jobs.get(job_id)
    if job is None or (job.user_id != actor.id and not actor.is_admin):
        raise JobNotFound()
    return job


async def list_dead_letters(
    uow: UnitOfWork, actor: User, limit: int = 20, after: str | None = None
) -> list[ImageJob]:
    require_admin(actor)
    async with uow:
        return await uow.image_jobs.search(
            user_id=None, dead_lettered=True, limit=limit, after=after
        )


async def redrive(
    uow: UnitOfWork,
    actor: User,
    job_id: str,
    request_id: str | None = None,
) -> ImageJob:
    """Put a dead-lettered job back in its queue, as new, through the outbox."""
    require_admin(actor)
    async with uow:
        job = await uow.image_jobs.get(job_id)
        if job is None or job.dead_lettered_at is None:
            raise DeadLetterNotFound()
        await uow.image_jobs.reset_for_redrive(job_id)
        product_id = None
        if job.product_image_id is not None:
            product_id = await uow.products.set_image_status(
                job.product_image_id, ImageStatus.PENDING
            )
        for event in job_events(job, product_id):
            uow.record(event)
        await uow.outbox.add(
            job.id, ACTOR_BY_QUEUE[job.queue], job.queue, request_id or job.request_id
        )
        await uow.commit()
    return job


async def requeue_unfinished(uow: UnitOfWork, older_than: datetime | None = None) -> int:
    """Queue again, through the outbox, jobs accepted but not finished (with `older_than`,
    only those idle since before it). Embedded mode does it at start, since its queue was in
    memory; an operator does it when RabbitMQ lost its messages (`stockroom jobs requeue`).
    The effect is idempotent, so a job that was only slow gets a harmless duplicate."""
    async with uow:
        jobs = await uow.image_jobs.unfinished(older_than)
        for job in jobs:
            await uow.outbox.add(job.id, ACTOR_BY_QUEUE[job.queue], job.queue, job.request_id)
        await uow.commit()
    return len(jobs)


async def pipeline_counts(uow: UnitOfWork) -> dict[str, int]:
    """Queue depth and dead letters as the database sees them (the source of truth)."""
    async with uow:
        return await uow.image_jobs.counts()

"""Standalone image jobs (POST /jobs): a source URL, operations, a result of its own.

A job is written with its outbox row in one transaction, on the jobs' own queue, and then
runs through the same pipeline as a product image (`pipeline/processing.py`): started,
retried by error kind, dead-lettered and redriven the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from stockroom.domain import image_jobs
from stockroom.domain.errors import JobNotFound
from stockroom.domain.idempotency import FirstResponse, IdempotencyKey, Outcome, create_once
from stockroom.domain.image_jobs import JOBS_QUEUE, PROCESS_JOB, new_job_id
from stockroom.domain.models import ImageJob, JobKind, JobStatus, User
from stockroom.domain.operations import Operation, operations_to_json
from stockroom.domain.ports import UnitOfWork

SUBMIT_SCOPE = "jobs.create"


@dataclass(frozen=True, slots=True)
class NewJob:
    source_url: str
    operations: tuple[Operation, ...] = ()
    callback_url: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    items: list[ImageJob]
    next_cursor: str | None  # the id of the page's last job


async def submit_job(
    uow: UnitOfWork,
    actor: User,
    job: NewJob,
    *,
    render: Callable[[ImageJob], bytes],
    idempotency: IdempotencyKey | None = None,
    request_id: str | None = None,
) -> Outcome:
    """Queue one job for the caller; with a key, a retry answers the first response."""

    async def create(uow: UnitOfWork) -> FirstResponse:
        queued = ImageJob(
            id=new_job_id(),
            user_id=actor.id,
            kind=JobKind.STANDALONE,
            status=JobStatus.QUEUED,
            queue=JOBS_QUEUE,
            operations=operations_to_json(job.operations),
            created_at=datetime.now(UTC),
            source_url=job.source_url,
            callback_url=job.callback_url,
            request_id=request_id,
        )
        await uow.image_jobs.add(queued)
        await uow.outbox.add(queued.id, PROCESS_JOB, JOBS_QUEUE, request_id)
        return FirstResponse(202, render(queued), f"/jobs/{queued.id}")

    return await create_once(uow, actor.id, SUBMIT_SCOPE, idempotency, create)


async def list_jobs(
    uow: UnitOfWork,
    actor: User,
    *,
    status: JobStatus | None = None,
    limit: int = 20,
    after: str | None = None,
) -> JobPage:
    """The caller's standalone jobs, newest first; an admin's list holds everyone's."""
    async with uow:
        found: Sequence[ImageJob] = await uow.image_jobs.search(
            user_id=None if actor.is_admin else actor.id,
            status=status,
            standalone_only=True,
            limit=limit + 1,
            after=after,
        )
    items = list(found[:limit])
    return JobPage(items, items[-1].id if len(found) > limit else None)


async def get_job(uow: UnitOfWork, actor: User, job_id: str) -> ImageJob:
    """The caller's standalone job (an admin's: anyone's); a product image's job is not one."""
    job = await image_jobs.get_job(uow, actor, job_id)
    if job.kind is not JobKind.STANDALONE:
        raise JobNotFound()
    return job

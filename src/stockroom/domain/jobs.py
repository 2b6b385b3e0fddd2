"""Standalone image jobs (POST /jobs): a source, operations, a result of its own.

The source is a URL the worker downloads, a file uploaded through the API, or a file the
client PUTs to storage itself (a direct upload: the job waits in `uploading` until
`start_upload`, or fails as `upload_expired`). A job is written with its outbox row in one
transaction, on the jobs' own queue, and then runs through the same pipeline as a product
image (`pipeline/processing.py`): started, retried by error kind, dead-lettered and
redriven the same way.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stockroom.domain import image_jobs
from stockroom.domain.errors import (
    JobNotFound,
    NotAllowed,
    TooLarge,
    UnsupportedMediaType,
    UploadExpired,
    UploadNotReady,
)
from stockroom.domain.idempotency import FirstResponse, IdempotencyKey, Outcome, create_once
from stockroom.domain.image_jobs import ACTOR_BY_QUEUE, JOBS_QUEUE, PROCESS_JOB, new_job_id
from stockroom.domain.image_types import IMAGE_MEDIA_TYPES
from stockroom.domain.models import ImageJob, JobKind, JobStatus, User
from stockroom.domain.operations import Operation, operations_to_json
from stockroom.domain.ports import Admissions, UnitOfWork

SUBMIT_SCOPE = "jobs.create"
UPLOAD_SCOPE = "jobs.upload_url"
UPLOADS_PREFIX = "uploads/"  # storage keys of uploaded sources (never served under /media)
UPLOAD_EXPIRED = "upload_expired"
_EXPIRED_TEXT = "the file was not uploaded and started before its upload URL expired"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to queue now: its source is a URL, or a file already in storage."""

    source_url: str | None = None
    source_key: str | None = None
    operations: tuple[Operation, ...] = ()
    callback_url: str | None = None

    def __post_init__(self) -> None:
        if (self.source_url is None) == (self.source_key is None):
            raise ValueError("a job has a source URL or a stored source, not both")


@dataclass(frozen=True, slots=True)
class DirectUpload:
    """A job whose file the client sends to storage itself, within `expires_in`."""

    content_type: str
    size: int
    expires_in: timedelta
    operations: tuple[Operation, ...] = ()
    callback_url: str | None = None
    # With file storage the upload URL is the API's own, carrying a token kept hashed here.
    token_hash: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    items: list[ImageJob]
    next_cursor: str | None  # the id of the page's last job


async def submit_job(
    uow: UnitOfWork,
    admissions: Admissions,
    actor: User,
    job: NewJob,
    *,
    render: Callable[[ImageJob], bytes],
    idempotency: IdempotencyKey | None = None,
    request_id: str | None = None,
) -> Outcome:
    """Queue one job for the caller; with a key, a retry answers the first response."""

    def queued() -> ImageJob:
        return ImageJob(
            id=new_job_id(),
            user_id=actor.id,
            kind=JobKind.STANDALONE,
            status=JobStatus.QUEUED,
            queue=JOBS_QUEUE,
            operations=operations_to_json(job.operations),
            created_at=datetime.now(UTC),
            source_url=job.source_url,
            source_key=job.source_key,
            callback_url=job.callback_url,
            request_id=request_id,
        )

    if idempotency is None:  # nothing to keep beside the rows: one statement on PostgreSQL
        new = queued()
        await admissions.submit_job(new)
        return Outcome(_accepted(new, render), replayed=False)

    async def create(uow: UnitOfWork) -> FirstResponse:
        new = queued()
        await write_job(uow, new)
        return _accepted(new, render)

    return await create_once(uow, actor.id, SUBMIT_SCOPE, idempotency, create)


def _accepted(job: ImageJob, render: Callable[[ImageJob], bytes]) -> FirstResponse:
    return FirstResponse(202, render(job), f"/jobs/{job.id}")


async def write_job(uow: UnitOfWork, job: ImageJob) -> None:
    """A queued standalone job's row and its outbox row, inside the caller's transaction."""
    await uow.image_jobs.add(job)
    await uow.outbox.add(job.id, ACTOR_BY_QUEUE[job.queue], job.queue, job.request_id)


def check_upload(content_type: str, size: int, max_bytes: int) -> None:
    """What can be told of a file before it is read: its declared type and size."""
    if content_type not in IMAGE_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"content_type must be one of {', '.join(sorted(IMAGE_MEDIA_TYPES))}"
        )
    if size > max_bytes:
        raise TooLarge(f"The file is larger than {max_bytes:,} bytes.")


async def open_upload(
    uow: UnitOfWork,
    actor: User,
    upload: DirectUpload,
    *,
    max_bytes: int,
    render: Callable[[ImageJob], bytes],
    idempotency: IdempotencyKey | None = None,
    request_id: str | None = None,
) -> Outcome:
    """A job in `uploading`, waiting for the client's PUT and `start_upload`; 201."""
    check_upload(upload.content_type, upload.size, max_bytes)

    async def create(uow: UnitOfWork) -> FirstResponse:
        job_id = new_job_id()
        now = datetime.now(UTC)
        waiting = ImageJob(
            id=job_id,
            user_id=actor.id,
            kind=JobKind.STANDALONE,
            status=JobStatus.UPLOADING,
            queue=JOBS_QUEUE,
            operations=operations_to_json(upload.operations),
            created_at=now,
            source_key=f"{UPLOADS_PREFIX}{job_id}",
            callback_url=upload.callback_url,
            request_id=request_id,
            upload_expires_at=now + upload.expires_in,
            upload_content_type=upload.content_type,
            upload_token_hash=upload.token_hash,
        )
        await uow.image_jobs.add(waiting)
        return FirstResponse(201, render(waiting), f"/jobs/{job_id}")

    return await create_once(uow, actor.id, UPLOAD_SCOPE, idempotency, create)


async def start_upload(
    uow: UnitOfWork,
    actor: User,
    job_id: str,
    *,
    size_of: Callable[[str], Awaitable[int | None]],
    max_bytes: int,
    request_id: str | None = None,
) -> ImageJob:
    """Queue a direct upload's job once its file is in storage and within the limit.

    Starting a job that already started answers it as it is: a client may retry.
    Raises UploadExpired (its URL expired first), UploadNotReady (nothing stored yet) or
    TooLarge (the stored file is over the limit; the job fails).
    """
    job = await get_job(uow, actor, job_id)
    if job.status is not JobStatus.UPLOADING:
        if job.status is JobStatus.FAILED and job.started_at is None:  # failed here
            if job.error_code == TooLarge.code:
                raise TooLarge(job.error)
            raise UploadExpired(job.error or _EXPIRED_TEXT)
        return job
    assert job.source_key is not None
    assert job.upload_expires_at is not None
    now = datetime.now(UTC)
    if job.upload_expires_at <= now:
        await expire_uploads(uow, now=now)
        raise UploadExpired(_EXPIRED_TEXT)
    size = await size_of(job.source_key)
    if size is None:
        raise UploadNotReady("PUT the file to the job's upload_url first.")
    async with uow:
        if size > max_bytes:
            detail = f"The uploaded file is larger than {max_bytes:,} bytes."
            await uow.image_jobs.mark_failed(job.id, detail, TooLarge.code, None)
        elif await uow.image_jobs.queue_upload(job.id):
            await uow.outbox.add(job.id, PROCESS_JOB, JOBS_QUEUE, request_id)
        await uow.commit()
    if size > max_bytes:
        raise TooLarge(f"The uploaded file is larger than {max_bytes:,} bytes.")
    return await get_job(uow, actor, job_id)


async def check_upload_put(
    uow: UnitOfWork, job_id: str, token_hash: str, content_type: str
) -> ImageJob:
    """The job a PUT to its upload URL is for, once the URL's token and the declared type
    are checked; NotAllowed for a wrong token, an unknown job or an expired URL alike."""
    async with uow:
        job = await uow.image_jobs.get(job_id)
    if (
        job is None
        or job.upload_token_hash is None
        or not hmac.compare_digest(job.upload_token_hash, token_hash)
    ):
        raise NotAllowed("This upload URL is not valid.")
    assert job.upload_expires_at is not None
    if job.status is not JobStatus.UPLOADING or job.upload_expires_at <= datetime.now(UTC):
        raise NotAllowed("This upload URL has expired or its job has started.")
    if content_type.split(";", 1)[0].strip().lower() != job.upload_content_type:
        raise UnsupportedMediaType(f"Send the file with Content-Type: {job.upload_content_type}.")
    return job


async def expire_uploads(uow: UnitOfWork, *, now: datetime | None = None) -> list[str]:
    """Fail the direct uploads never started before their URL expired; their ids."""
    async with uow:
        expired = await uow.image_jobs.expire_uploads(
            now or datetime.now(UTC), _EXPIRED_TEXT, UPLOAD_EXPIRED
        )
        await uow.commit()
    return expired


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

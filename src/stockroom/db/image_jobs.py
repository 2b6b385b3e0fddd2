"""Image-job and outbox rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from stockroom.db.products import result_columns
from stockroom.db.tables import image_jobs, outbox
from stockroom.domain.errors import FieldError, InvalidInput
from stockroom.domain.models import ImageJob, ImageResult, JobKind, JobStatus, OutboxMessage

_UNFINISHED = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)
_OPEN = (JobStatus.UPLOADING.value, *_UNFINISHED)  # what may still fail


def job_row(job: ImageJob) -> dict[str, Any]:
    """The columns a new job's row is written with (db/admissions.py writes them too)."""
    return {
        "id": job.id,
        "user_id": job.user_id,
        "kind": job.kind.value,
        "product_image_id": job.product_image_id,
        "product_id": job.product_id,
        "source_url": job.source_url,
        "source_key": job.source_key,
        "operations": orjson.dumps(job.operations).decode(),
        "status": job.status.value,
        "callback_url": job.callback_url,
        "request_id": job.request_id,
        "queue": job.queue,
        "created_at": job.created_at,
        "upload_expires_at": job.upload_expires_at,
        "upload_content_type": job.upload_content_type,
        "upload_token_hash": job.upload_token_hash,
    }


class SqlImageJobRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, job: ImageJob) -> None:
        await self.add_many([job])

    async def add_many(self, jobs: Sequence[ImageJob]) -> None:
        if not jobs:
            return
        rows = [job_row(job) for job in jobs]
        await self._conn.execute(insert(image_jobs), rows)

    async def get(self, job_id: str) -> ImageJob | None:
        row = (
            await self._conn.execute(select(image_jobs).where(image_jobs.c.id == job_id))
        ).first()
        return job_from(row._mapping) if row else None

    async def start(self, job_id: str) -> ImageJob | None:
        now = datetime.now(UTC)
        statement = (
            update(image_jobs)
            .where(image_jobs.c.id == job_id, image_jobs.c.status.in_(_UNFINISHED))
            .values(
                status=JobStatus.PROCESSING.value,
                attempts=image_jobs.c.attempts + 1,
                started_at=now,
            )
            .returning(image_jobs)
        )
        row = (await self._conn.execute(statement)).first()
        return job_from(row._mapping) if row else None

    async def mark_succeeded(self, job_id: str, result: ImageResult) -> bool:
        return await self._finish(
            job_id,
            status=JobStatus.SUCCEEDED.value,
            output_url=result.output_url,
            **result_columns(result),
        )

    async def mark_failed(
        self, job_id: str, error: str, error_code: str | None, dead_lettered_at: datetime | None
    ) -> bool:
        return await self._finish(
            job_id,
            status=JobStatus.FAILED.value,
            error=error,
            error_code=error_code,
            dead_lettered_at=dead_lettered_at,
        )

    async def record_failed_attempt(self, job_id: str, error: str, error_code: str) -> None:
        await self._conn.execute(
            update(image_jobs)
            .where(image_jobs.c.id == job_id)
            .values(error=error, error_code=error_code)
        )

    async def queue_upload(self, job_id: str) -> bool:
        """An uploaded job becomes queued; False when it is not `uploading` (any more)."""
        statement = (
            update(image_jobs)
            .where(image_jobs.c.id == job_id, image_jobs.c.status == JobStatus.UPLOADING.value)
            .values(status=JobStatus.QUEUED.value)
            .returning(image_jobs.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def expire_uploads(self, now: datetime, error: str, error_code: str) -> list[str]:
        statement = (
            update(image_jobs)
            .where(
                image_jobs.c.status == JobStatus.UPLOADING.value,
                image_jobs.c.upload_expires_at < now,
            )
            .values(
                status=JobStatus.FAILED.value, error=error, error_code=error_code, finished_at=now
            )
            .returning(image_jobs.c.id)
        )
        return [row[0] for row in (await self._conn.execute(statement)).all()]

    async def reset_for_redrive(self, job_id: str) -> None:
        await self._conn.execute(
            update(image_jobs)
            .where(image_jobs.c.id == job_id)
            .values(
                status=JobStatus.QUEUED.value,
                attempts=0,
                finished_at=None,
                dead_lettered_at=None,
            )
        )

    async def _finish(self, job_id: str, **values: object) -> bool:
        """Write the outcome of a job not yet finished; False if another delivery did."""
        statement = (
            update(image_jobs)
            .where(image_jobs.c.id == job_id, image_jobs.c.status.in_(_OPEN))
            .values(**values, finished_at=datetime.now(UTC))
            .returning(image_jobs.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def search(
        self,
        *,
        user_id: int | None,
        status: JobStatus | None = None,
        dead_lettered: bool = False,
        standalone_only: bool = False,
        limit: int = 20,
        after: str | None = None,
    ) -> list[ImageJob]:
        """Newest first; `after` is the id of the last job of the previous page."""
        statement = select(image_jobs)
        if user_id is not None:
            statement = statement.where(image_jobs.c.user_id == user_id)
        if status is not None:
            statement = statement.where(image_jobs.c.status == status.value)
        if dead_lettered:
            statement = statement.where(image_jobs.c.dead_lettered_at.is_not(None))
        if standalone_only:
            statement = statement.where(image_jobs.c.kind == JobKind.STANDALONE.value)
        if after is not None:
            anchor = select(image_jobs.c.created_at).where(image_jobs.c.id == after)
            created = (await self._conn.execute(anchor)).scalar_one_or_none()
            if created is None:
                raise InvalidInput(
                    "invalid cursor", [FieldError("cursor", "is not a cursor from this list")]
                )
            statement = statement.where(
                (image_jobs.c.created_at < created)
                | ((image_jobs.c.created_at == created) & (image_jobs.c.id < after))
            )
        statement = statement.order_by(image_jobs.c.created_at.desc(), image_jobs.c.id.desc())
        rows = (await self._conn.execute(statement.limit(limit))).all()
        return [job_from(row._mapping) for row in rows]

    async def counts(self) -> dict[str, int]:
        by_status = (
            select(image_jobs.c.status, func.count())
            .where(image_jobs.c.status.in_(_UNFINISHED))
            .group_by(image_jobs.c.status)
        )
        counts = dict.fromkeys(_UNFINISHED, 0)
        counts |= {row[0]: int(row[1]) for row in await self._conn.execute(by_status)}
        dead = select(func.count()).where(image_jobs.c.dead_lettered_at.is_not(None))
        backlog = select(func.count()).where(outbox.c.published_at.is_(None))
        counts["dead_lettered"] = int((await self._conn.execute(dead)).scalar_one())
        counts["outbox_unpublished"] = int((await self._conn.execute(backlog)).scalar_one())
        return counts

    async def unfinished(self, older_than: datetime | None = None) -> list[ImageJob]:
        statement = select(image_jobs).where(image_jobs.c.status.in_(_UNFINISHED))
        if older_than is not None:
            last_step = func.coalesce(image_jobs.c.started_at, image_jobs.c.created_at)
            statement = statement.where(last_step < older_than)
        return [job_from(row._mapping) for row in (await self._conn.execute(statement)).all()]


class SqlOutboxRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection
        self.added = 0

    async def add(
        self,
        job_id: str,
        actor: str,
        queue: str,
        request_id: str | None,
        *,
        not_before: datetime | None = None,
    ) -> None:
        await self.add_many([job_id], actor, queue, request_id, not_before=not_before)

    async def add_many(
        self,
        job_ids: Sequence[str],
        actor: str,
        queue: str,
        request_id: str | None,
        *,
        not_before: datetime | None = None,
    ) -> None:
        if not job_ids:
            return
        self.added += len(job_ids)
        now = datetime.now(UTC)
        rows = [
            {
                "job_id": job_id,
                "actor": actor,
                "queue": queue,
                "request_id": request_id,
                "created_at": now,
                "not_before": not_before,
            }
            for job_id in job_ids
        ]
        await self._conn.execute(insert(outbox), rows)

    async def claim(self, limit: int) -> list[OutboxMessage]:
        statement = (
            select(
                outbox.c.id, outbox.c.job_id, outbox.c.actor, outbox.c.queue, outbox.c.request_id
            )
            .where(
                outbox.c.published_at.is_(None),
                or_(outbox.c.not_before.is_(None), outbox.c.not_before <= datetime.now(UTC)),
            )
            .order_by(outbox.c.id)
            .limit(limit)
        )
        if self._conn.dialect.name == "postgresql":
            statement = statement.with_for_update(skip_locked=True)
        rows = (await self._conn.execute(statement)).all()
        return [
            OutboxMessage(
                id=row.id,
                job_id=row.job_id,
                actor=row.actor,
                queue=row.queue,
                request_id=row.request_id,
            )
            for row in rows
        ]

    async def mark_published(self, ids: Sequence[int]) -> None:
        if ids:
            await self._conn.execute(
                update(outbox).where(outbox.c.id.in_(ids)).values(published_at=datetime.now(UTC))
            )


def job_from(values: Any) -> ImageJob:
    """A job from an `image_jobs` row, read by column name (a SQLAlchemy row's `_mapping`
    or an asyncpg record: db/job_transitions.py maps its rows through here too)."""
    return ImageJob(
        id=values["id"],
        user_id=values["user_id"],
        kind=JobKind(values["kind"]),
        status=JobStatus(values["status"]),
        queue=values["queue"],
        operations=orjson.loads(values["operations"]),
        created_at=values["created_at"],
        product_image_id=values["product_image_id"],
        product_id=values["product_id"],
        source_url=values["source_url"],
        source_key=values["source_key"],
        attempts=values["attempts"],
        error=values["error"],
        error_code=values["error_code"],
        output_key=values["output_key"],
        output_url=values["output_url"],
        width=values["width"],
        height=values["height"],
        bytes_in=values["bytes_in"],
        bytes_out=values["bytes_out"],
        callback_url=values["callback_url"],
        request_id=values["request_id"],
        started_at=values["started_at"],
        finished_at=values["finished_at"],
        dead_lettered_at=values["dead_lettered_at"],
        upload_expires_at=values["upload_expires_at"],
        upload_content_type=values["upload_content_type"],
        upload_token_hash=values["upload_token_hash"],
    )

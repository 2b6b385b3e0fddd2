"""/admin: what operators need: dead-lettered jobs, and putting them back in their queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from stockroom.api.deps import CurrentUser, RequestId, ServicesDep, UowDep
from stockroom.domain import image_jobs
from stockroom.domain.models import ImageJob

router = APIRouter(prefix="/admin", tags=["admin"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


class DeadLetter(BaseModel):
    id: str
    kind: str
    user_id: int
    product_id: int | None
    source_url: str | None
    queue: str
    attempts: int
    error: str | None
    error_code: str | None
    created_at: datetime
    dead_lettered_at: datetime | None


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_cursor: str | None


class Redriven(BaseModel):
    id: str
    status: str
    product_id: int | None


def dead_letter(job: ImageJob) -> DeadLetter:
    return DeadLetter(
        id=job.id,
        kind=job.kind.value,
        user_id=job.user_id,
        product_id=job.product_id,
        source_url=job.source_url,
        queue=job.queue,
        attempts=job.attempts,
        error=job.error,
        error_code=job.error_code,
        created_at=job.created_at,
        dead_lettered_at=job.dead_lettered_at,
    )


@router.get("/dead-letters", response_model=DeadLetterPage, responses={403: {}})
async def list_dead_letters(
    caller: CurrentUser,
    uow: UowDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> DeadLetterPage:
    jobs = await image_jobs.list_dead_letters(uow, caller, limit=limit + 1, after=cursor)
    page = jobs[:limit]
    return DeadLetterPage(
        items=[dead_letter(job) for job in page],
        next_cursor=page[-1].id if len(jobs) > limit else None,
    )


@router.post(
    "/dead-letters/{job_id}/retry",
    status_code=202,
    response_model=Redriven,
    responses={403: {}, 404: {}},
)
async def retry_dead_letter(
    job_id: JobId, caller: CurrentUser, uow: UowDep, services: ServicesDep, request_id: RequestId
) -> Redriven:
    job = await image_jobs.redrive(uow, caller, job_id, request_id)
    return Redriven(id=job.id, status="queued", product_id=job.product_id)

"""/jobs: standalone image jobs by URL (and the aliases the contract names), read back by
their owner; an admin reads everyone's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from stockroom.api.deps import CurrentUser, ReadUowDep, RequestId, UowDep
from stockroom.api.fields import ImageUrl
from stockroom.api.idempotency import IdempotencyDep, answer
from stockroom.domain import jobs
from stockroom.domain.idempotency import fingerprint_of
from stockroom.domain.models import ImageJob, JobStatus
from stockroom.domain.operations import MAX_OPERATIONS, operations_to_json, parse_operations_json

router = APIRouter(tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
JSON = "application/json"


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: ImageUrl
    # Validated by the domain's parser, which names each bad item's position.
    operations: Annotated[list[dict[str, Any]], Field(max_length=MAX_OPERATIONS)] | None = None
    callback_url: ImageUrl | None = None


class JobAccepted(BaseModel):
    id: str
    status: str
    status_url: str


class JobPublic(BaseModel):
    id: str
    status: str
    operations: list[dict[str, Any]]
    source_url: str | None
    output_url: str | None
    attempts: int
    error: str | None
    error_code: str | None
    width: int | None
    height: int | None
    bytes_in: int | None
    bytes_out: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None


def job_dict(job: ImageJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status.value,
        "operations": job.operations,
        "source_url": job.source_url,
        "output_url": job.output_url,
        "attempts": job.attempts,
        "error": job.error,
        "error_code": job.error_code,
        "width": job.width,
        "height": job.height,
        "bytes_in": job.bytes_in,
        "bytes_out": job.bytes_out,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def _accepted(job: ImageJob) -> bytes:
    return orjson.dumps({"id": job.id, "status": job.status.value, "status_url": f"/jobs/{job.id}"})


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobAccepted,
    responses={409: {"description": "Idempotency-Key reused"}},
)
async def submit_job(
    body: JobCreate,
    user: CurrentUser,
    uow: UowDep,
    request_id: RequestId,
    idempotency: IdempotencyDep,
) -> Response:
    operations = parse_operations_json(body.operations)
    job = jobs.NewJob(body.image_url, operations, body.callback_url)
    what = {
        "u": job.source_url,
        "o": operations_to_json(operations),
        "c": job.callback_url,
    }
    outcome = await jobs.submit_job(
        uow,
        user,
        job,
        render=_accepted,
        idempotency=idempotency.for_body(fingerprint_of(what)),
        request_id=request_id,
    )
    return answer(outcome.response, replayed=outcome.replayed)


# The image-service clients' spelling of the same operation.
router.add_api_route(
    "/process-image",
    submit_job,
    methods=["POST"],
    status_code=202,
    response_model=JobAccepted,
    responses={409: {"description": "Idempotency-Key reused"}},
    name="submit_job_alias",
)


@router.get("/jobs/{job_id}", response_model=JobPublic, responses={404: {}})
async def get_job(job_id: JobId, user: CurrentUser, uow: ReadUowDep) -> Response:
    job = await jobs.get_job(uow, user, job_id)
    return Response(orjson.dumps(job_dict(job), option=orjson.OPT_UTC_Z), media_type=JSON)


router.add_api_route(
    "/status/{job_id}",
    get_job,
    methods=["GET"],
    response_model=JobPublic,
    responses={404: {}},
    name="get_job_alias",
)


@router.get("/jobs", response_model=JobPage)
async def list_jobs(
    user: CurrentUser,
    uow: ReadUowDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> Response:
    page = await jobs.list_jobs(uow, user, status=status, limit=limit, after=cursor)
    body = {"items": [job_dict(job) for job in page.items], "next_cursor": page.next_cursor}
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type=JSON)

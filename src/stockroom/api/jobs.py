"""/jobs: standalone image jobs by URL (and the aliases the contract names), read back by
their owner; an admin reads everyone's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from stockroom.api.deps import CurrentUser, ReadUowDep, RequestId, ServicesDep, UowDep
from stockroom.api.fields import CallbackUrl, ImageUrl
from stockroom.api.idempotency import IdempotencyDep, answer
from stockroom.api.webhooks import check_callback
from stockroom.domain import jobs
from stockroom.domain.idempotency import fingerprint_of
from stockroom.domain.models import ImageJob, JobStatus
from stockroom.domain.operations import (
    MAX_OPERATIONS,
    Operation,
    operations_to_json,
    parse_operations_json,
    parse_operations_text,
)
from stockroom.domain.views import job_view

router = APIRouter(tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
JSON = "application/json"


# The JSON form (a list of objects) or the text form ("rotate,90;resize,800x600"); checked
# by the domain's parsers, which name each bad item's position.
OperationsField = (
    Annotated[list[dict[str, Any]], Field(max_length=MAX_OPERATIONS)]
    | Annotated[str, Field(max_length=4096)]
    | None
)


def parse_operations(value: list[dict[str, Any]] | str | None) -> tuple[Operation, ...]:
    if isinstance(value, str):
        return parse_operations_text(value)
    return parse_operations_json(value)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: ImageUrl
    operations: OperationsField = None
    callback_url: CallbackUrl | None = None


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


def accepted(job: ImageJob) -> bytes:
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
    services: ServicesDep,
    request_id: RequestId,
    idempotency: IdempotencyDep,
) -> Response:
    check_callback(services, body.callback_url)
    operations = parse_operations(body.operations)
    job = jobs.NewJob(
        source_url=body.image_url, operations=operations, callback_url=body.callback_url
    )
    what = {
        "u": job.source_url,
        "o": operations_to_json(operations),
        "c": job.callback_url,
    }
    outcome = await jobs.submit_job(
        uow,
        services.admissions,
        user,
        job,
        render=accepted,
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
    return Response(orjson.dumps(job_view(job), option=orjson.OPT_UTC_Z), media_type=JSON)


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
    body = {"items": [job_view(job) for job in page.items], "next_cursor": page.next_cursor}
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type=JSON)

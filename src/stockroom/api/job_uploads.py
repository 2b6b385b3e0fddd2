"""Jobs on files the client sends: through the API (`POST /jobs/upload`, multipart), or
straight to storage (`POST /jobs/upload-url`, the client's PUT, `POST /jobs/{id}/start`).

A multipart upload is limited while it streams (the body-size middleware, 413) and its type
is sniffed from its first bytes (415); only then is it stored, under a content-derived key
in `uploads/` (a retried upload overwrites the same object), and its job queued. A direct
upload's URL is S3's pre-signed PUT, or with file storage `PUT /uploads/{job_id}?token=` on
this API: the token is random and kept only hashed on the job, so any API instance checks
it, and it stops working when the job leaves `uploading` or its URL expires.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from stockroom.api.deps import CurrentUser, RequestId, ServicesDep, UowDep
from stockroom.api.fields import CallbackUrl
from stockroom.api.forms import (
    CALLBACK_URL_FIELD,
    READ_CHUNK,
    callback_field_problem,
    file_form,
    text_field,
    too_large,
)
from stockroom.api.idempotency import IdempotencyDep, answer
from stockroom.api.jobs import JSON, JobAccepted, JobId, OperationsField, accepted, parse_operations
from stockroom.api.webhooks import check_callback
from stockroom.domain import jobs
from stockroom.domain.errors import FieldError, InvalidInput, UnsupportedMediaType
from stockroom.domain.idempotency import fingerprint_of
from stockroom.domain.image_types import SNIFF_BYTES, sniff
from stockroom.domain.models import ImageJob
from stockroom.domain.operations import Operation, operations_to_json, parse_operations_text

router = APIRouter(tags=["jobs"])
_UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "operations": {
                            "type": "string",
                            "description": 'Text form, e.g. "rotate,90;resize,800x600"',
                        },
                        "callback_url": CALLBACK_URL_FIELD,
                    },
                }
            }
        },
    }
}


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- POST /jobs/upload (multipart) --------------------------------------------------------


@router.post(
    "/jobs/upload",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=_UPLOAD_FORM,
    responses={409: {}, 413: {}, 415: {}},
)
async def upload_job(
    request: Request,
    user: CurrentUser,
    uow: UowDep,
    services: ServicesDep,
    request_id: RequestId,
    idempotency: IdempotencyDep,
) -> Response:
    max_bytes = services.settings.max_image_bytes
    async with file_form(request, "the file", max_fields=2) as form:
        upload = form.get("file")
        ops, callback = _form_fields(form.get("operations"), form.get("callback_url"))
        check_callback(services, callback)
        if not isinstance(upload, UploadFile):
            raise InvalidInput("Invalid input", [FieldError("file", "a file is required")])
        data, media_type = await _read_image(upload, max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    key = f"{jobs.UPLOADS_PREFIX}{digest}"
    await services.store.put(key, data, media_type)
    outcome = await jobs.submit_job(
        uow,
        services.admissions,
        user,
        jobs.NewJob(source_key=key, operations=ops, callback_url=callback),
        render=accepted,
        idempotency=idempotency.for_body(
            fingerprint_of({"f": digest, "o": operations_to_json(ops), "c": callback})
        ),
        request_id=request_id,
    )
    return answer(outcome.response, replayed=outcome.replayed)


router.add_api_route(
    "/upload",
    upload_job,
    methods=["POST"],
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=_UPLOAD_FORM,
    responses={409: {}, 413: {}, 415: {}},
    name="upload_job_alias",
)


def _form_fields(
    operations: object, callback_url: object
) -> tuple[tuple[Operation, ...], str | None]:
    """Both fields checked, their problems in one 422."""
    text, callback = text_field(operations), text_field(callback_url)
    errors: list[FieldError] = []
    ops: tuple[Operation, ...] = ()
    try:
        ops = parse_operations_text(text or "")
    except InvalidInput as exc:
        errors.extend(exc.errors)
    if problem := callback_field_problem(callback):
        errors.append(problem)
    if errors:
        raise InvalidInput("Invalid input", errors)
    return ops, callback


async def _read_image(upload: UploadFile, max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes (at most `max_bytes`: it was spooled to disk while it streamed) and
    the media type its first bytes tell; 415 when they tell no image."""
    if upload.size is not None and upload.size > max_bytes:
        raise too_large(max_bytes)
    head = await upload.read(SNIFF_BYTES)
    media_type = sniff(head)
    if media_type is None:
        raise UnsupportedMediaType(
            "The file is not a JPEG, PNG, WebP, GIF, TIFF, AVIF or HEIC image."
        )
    chunks = [head]
    size = len(head)
    while chunk := await upload.read(READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks), media_type


# -- direct upload: POST /jobs/upload-url, PUT, POST /jobs/{id}/start ---------------------


class UploadUrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_type: Annotated[str, Field(min_length=1, max_length=64)]
    # Strict: `true` is not a size. JSON-safe bound; over the limit is a 413.
    bytes: Annotated[int, Field(strict=True, ge=1, le=2**53 - 1)]
    operations: OperationsField = None
    callback_url: CallbackUrl | None = None


class UploadUrl(BaseModel):
    job_id: str
    upload_url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


@router.post(
    "/jobs/upload-url",
    status_code=201,
    response_model=UploadUrl,
    responses={409: {}, 413: {}, 415: {}},
)
async def create_upload_url(
    body: UploadUrlRequest,
    user: CurrentUser,
    uow: UowDep,
    services: ServicesDep,
    request_id: RequestId,
    idempotency: IdempotencyDep,
) -> Response:
    settings = services.settings
    check_callback(services, body.callback_url)
    operations = parse_operations(body.operations)
    ttl = settings.upload_url_ttl_seconds
    store = services.store
    # Also with S3, where the pre-signed URL is the one given: the API's URL works with
    # every backend, and costs a hash.
    token = secrets.token_urlsafe(32)

    def render(job: ImageJob) -> bytes:
        assert job.source_key is not None
        assert job.upload_expires_at is not None
        url = store.presigned_put(job.source_key, body.content_type, ttl)
        if url is None:
            url = f"{settings.public_base_url}/uploads/{job.id}?token={token}"
        return orjson.dumps(
            {
                "job_id": job.id,
                "upload_url": url,
                "method": "PUT",
                "headers": {"Content-Type": body.content_type},
                "expires_at": job.upload_expires_at,
            },
            option=orjson.OPT_UTC_Z,
        )

    upload = jobs.DirectUpload(
        content_type=body.content_type,
        size=body.bytes,
        expires_in=timedelta(seconds=ttl),
        operations=operations,
        callback_url=body.callback_url,
        token_hash=_token_hash(token),
    )
    what = {
        "t": body.content_type,
        "b": body.bytes,
        "o": operations_to_json(operations),
        "c": body.callback_url,
    }
    outcome = await jobs.open_upload(
        uow,
        user,
        upload,
        max_bytes=settings.max_image_bytes,
        render=render,
        idempotency=idempotency.for_body(fingerprint_of(what)),
        request_id=request_id,
    )
    return answer(outcome.response, replayed=outcome.replayed)


@router.put(
    "/uploads/{job_id}",
    status_code=200,
    responses={403: {}, 413: {}, 415: {}},
    openapi_extra={
        "requestBody": {"required": True, "content": {"image/*": {"schema": {"format": "binary"}}}}
    },
)
async def receive_upload(
    job_id: JobId,
    request: Request,
    uow: UowDep,
    services: ServicesDep,
    token: Annotated[str, Query(min_length=1, max_length=128)],
) -> Response:
    """The upload URL of a direct upload with file storage: no bearer token, the URL's
    token is the permission (as an S3 pre-signed URL's signature is)."""
    job = await jobs.check_upload_put(
        uow, job_id, _token_hash(token), request.headers.get("content-type", "")
    )
    assert job.source_key is not None
    assert job.upload_content_type is not None
    data = bytearray()
    max_bytes = services.settings.max_image_bytes
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_bytes:
            raise too_large(max_bytes)
    await services.store.put(job.source_key, bytes(data), job.upload_content_type)
    return Response(status_code=200)


@router.post(
    "/jobs/{job_id}/start",
    status_code=202,
    response_model=JobAccepted,
    responses={404: {}, 409: {}, 413: {}},
)
async def start_upload(
    job_id: JobId, user: CurrentUser, uow: UowDep, services: ServicesDep, request_id: RequestId
) -> Response:
    job = await jobs.start_upload(
        uow,
        user,
        job_id,
        size_of=services.store.size,
        max_bytes=services.settings.max_image_bytes,
        request_id=request_id,
    )
    return Response(accepted(job), 202, headers={"Location": f"/jobs/{job.id}"}, media_type=JSON)

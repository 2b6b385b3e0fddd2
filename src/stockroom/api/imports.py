"""/imports: CSV bulk imports. `POST /imports` takes the file as multipart, checks it whole as
it is read from the spooled upload (every problem in one 422, nothing imported), and answers
202 once its rows are stored; `GET /imports/{id}` follows it, and `output.csv` gives the rows
back with the processed image URLs."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import IO, Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from stockroom.api.deps import CurrentUser, ReadUowDep, RequestId, ServicesDep, UowDep
from stockroom.api.forms import (
    CALLBACK_URL_FIELD,
    READ_CHUNK,
    callback_field_problem,
    file_form,
    text_field,
    too_large,
)
from stockroom.api.idempotency import IdempotencyDep, answer
from stockroom.api.webhooks import check_callback
from stockroom.domain import imports
from stockroom.domain.csv_import import CsvImportReader, ImportLimits, ParsedImport
from stockroom.domain.errors import FieldError, InvalidInput
from stockroom.domain.idempotency import fingerprint_of
from stockroom.domain.models import Import
from stockroom.domain.views import import_view
from stockroom.services import Services

router = APIRouter(tags=["imports"])
ImportId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
JSON = "application/json"
OUTPUT_COLUMN = "Output Image URLs"
_IMPORT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV, UTF-8: Serial Number, Product Name, "
                            "Input Image URLs; optional Price, Description",
                        },
                        "callback_url": CALLBACK_URL_FIELD,
                    },
                }
            }
        },
    }
}


class ImportAccepted(BaseModel):
    request_id: str
    status: str
    status_url: str


class ImportPublic(BaseModel):
    request_id: str
    status: str
    rows: int
    rows_done: int
    images_total: int
    images_done: int
    images_failed: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    output_url: str | None


class ImportPage(BaseModel):
    items: list[ImportPublic]
    next_cursor: str | None


def _accepted(accepted: Import) -> bytes:
    return orjson.dumps(
        {
            "request_id": accepted.id,
            "status": accepted.status.value,
            "status_url": f"/imports/{accepted.id}",
        }
    )


@router.post(
    "/imports",
    status_code=202,
    response_model=ImportAccepted,
    openapi_extra=_IMPORT_FORM,
    responses={409: {}, 413: {}, 415: {}, 422: {}},
)
async def create_import(
    request: Request,
    user: CurrentUser,
    uow: UowDep,
    services: ServicesDep,
    request_id: RequestId,
    idempotency: IdempotencyDep,
) -> Response:
    settings = services.settings
    limits = ImportLimits(
        max_rows=settings.import_max_rows, max_urls_per_row=settings.import_max_urls_per_row
    )
    async with file_form(request, "the CSV file", max_fields=1) as form:
        upload = form.get("file")
        callback_url = text_field(form.get("callback_url"))
        if problem := callback_field_problem(callback_url):
            raise InvalidInput("Invalid input", [problem])
        check_callback(services, callback_url)
        if not isinstance(upload, UploadFile):
            raise InvalidInput("Invalid input", [FieldError("file", "a CSV file is required")])
        if upload.size is not None and upload.size > settings.import_max_bytes:
            raise too_large(settings.import_max_bytes)
        # Off the event loop: checking 50 MB of CSV takes seconds of CPU.
        parsed, digest = await run_in_threadpool(
            _read_csv, upload.file, limits, settings.import_max_bytes
        )
    outcome = await imports.accept_import(
        uow,
        user,
        parsed,
        per_batch=settings.import_batch_rows,
        render=_accepted,
        callback_url=callback_url,
        idempotency=idempotency.for_body(fingerprint_of({"f": digest, "c": callback_url})),
        request_id=request_id,
    )
    return answer(outcome.response, replayed=outcome.replayed)


def _read_csv(file: IO[bytes], limits: ImportLimits, max_bytes: int) -> tuple[ParsedImport, str]:
    """Check the spooled file a chunk at a time (never read whole), and hash it for the
    Idempotency-Key; the file alone is held to `max_bytes` exactly."""
    reader = CsvImportReader(limits)
    digest = hashlib.sha256()
    size = 0
    while chunk := file.read(READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        digest.update(chunk)
        reader.feed(chunk)
    return reader.finish(), digest.hexdigest()


@router.get("/imports", response_model=ImportPage)
async def list_imports(
    user: CurrentUser,
    uow: ReadUowDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> Response:
    page = await imports.list_imports(uow, user, limit=limit, after=cursor)
    body = {"items": [import_view(found) for found in page.items], "next_cursor": page.next_cursor}
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type=JSON)


@router.get("/imports/{import_id}", response_model=ImportPublic, responses={404: {}})
async def get_import(import_id: ImportId, user: CurrentUser, uow: ReadUowDep) -> Response:
    found = await imports.get_import(uow, user, import_id)
    return Response(orjson.dumps(import_view(found), option=orjson.OPT_UTC_Z), media_type=JSON)


@router.get(
    "/imports/{import_id}/output.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, 404: {}},
)
async def get_output(
    import_id: ImportId, user: CurrentUser, uow: ReadUowDep, services: ServicesDep
) -> StreamingResponse:
    """The input columns in their order, plus `Output Image URLs`: per input URL, in its
    position, the processed image's URL, empty while not ready or when it failed."""
    found = await imports.get_import(uow, user, import_id)
    return StreamingResponse(
        _output_csv(found, services),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{found.id}.csv"'},
    )


async def _output_csv(found: Import, services: Services) -> AsyncIterator[bytes]:
    text = io.StringIO()
    writer = csv.writer(text)
    header = list(found.columns)
    # A file exported from here and imported again: its output column is filled in again.
    names = [name.strip().casefold() for name in header]
    at = names.index(OUTPUT_COLUMN.casefold()) if OUTPUT_COLUMN.casefold() in names else None
    if at is None:
        header.append(OUTPUT_COLUMN)
    writer.writerow(header)
    async for page in imports.output_rows(services.read_uow, found.id):
        for row in page:
            cells = list(row.cells)
            outputs = ",".join(url or "" for url in row.outputs)
            if at is None:
                cells.append(outputs)
            else:
                cells[at] = outputs
            writer.writerow(cells)
        yield text.getvalue().encode()
        text.seek(0)
        text.truncate()
    if text.tell():
        yield text.getvalue().encode()

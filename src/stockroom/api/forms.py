"""Reading the multipart forms of the routes that take a file (`POST /jobs/upload`,
`POST /imports`): one file, a few small text fields, limits while they stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from stockroom.domain.errors import FieldError, InvalidInput, TooLarge, UnsupportedMediaType
from stockroom.domain.webhooks import callback_url_problem

MULTIPART_SLACK = 64 * 1024  # the form's boundaries, headers and small fields
# The forms' `callback_url` in the OpenAPI schema: a URL, or empty for none, since a form
# sends its empty fields and `text_field` reads one as absent.
CALLBACK_URL_FIELD = {
    "anyOf": [{"type": "string", "format": "uri"}, {"type": "string", "maxLength": 0}],
    "description": "Called with the final status (webhook); empty or absent: none.",
}
FORM_FIELD_BYTES = 16 * 1024  # each text field (`operations`, `callback_url`)
READ_CHUNK = 1024 * 1024


@asynccontextmanager
async def file_form(request: Request, what: str, *, max_fields: int) -> AsyncIterator[FormData]:
    """The request's form, spooled while it streams (415 unless it is multipart; a malformed
    one is a 422); its files are closed when the block ends."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType(f"Send {what} as multipart/form-data, in a field named file.")
    try:
        async with request.form(
            max_files=1, max_fields=max_fields, max_part_size=FORM_FIELD_BYTES
        ) as form:
            yield form
    except MultiPartException as exc:
        raise InvalidInput("Malformed form", [FieldError("body", exc.message)]) from exc


def text_field(value: object) -> str | None:
    """A text field's value, None when absent or empty; a file in its place is a 422."""
    if isinstance(value, UploadFile):
        raise InvalidInput("Invalid input", [FieldError("body", "only `file` may be a file")])
    return str(value) if value else None


def callback_field_problem(callback_url: str | None) -> FieldError | None:
    problem = callback_url_problem(callback_url) if callback_url is not None else None
    return FieldError("callback_url", problem) if problem else None


def too_large(max_bytes: int) -> TooLarge:
    return TooLarge(f"The file is larger than {max_bytes:,} bytes.")

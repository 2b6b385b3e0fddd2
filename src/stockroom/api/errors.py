"""The one place where errors become HTTP: problem+json (RFC 9457) for every failure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from stockroom.domain.csv_import import CsvInvalid
from stockroom.domain.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    StockroomError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)

PROBLEM_JSON = "application/problem+json"
_STATUS_BY_BRANCH: tuple[tuple[type[StockroomError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidInput, 422),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (RateLimited, 429),
    (TooLarge, 413),
    (UnsupportedMediaType, 415),
    (Unavailable, 503),
)
_RETRY_AFTER_SECONDS = "5"


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    errors: Sequence[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = list(errors)
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


def status_for(exc: StockroomError) -> int:
    for branch, status in _STATUS_BY_BRANCH:
        if isinstance(exc, branch):
            return status
    return 500


async def _stockroom_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StockroomError)
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="stockroom"'
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = _RETRY_AFTER_SECONDS
    if isinstance(exc, RateLimited):
        headers |= _rate_limit_headers(exc)
    if isinstance(exc, CsvInvalid):
        return _csv_problem(status, exc)
    errors = [_field_error(e) for e in exc.errors] if isinstance(exc, InvalidInput) else None
    return problem(
        status,
        exc.title,
        exc.detail,
        type_=f"https://stockroom.dev/problems/{exc.code}",
        errors=errors,
        headers=headers,
    )


def _csv_problem(status: int, exc: CsvInvalid) -> Response:
    """A CSV file's problems by row and column; `total` counts them all when only the first
    ones are listed."""
    body: dict[str, Any] = {
        "type": f"https://stockroom.dev/problems/{exc.code}",
        "title": exc.title,
        "status": status,
        "detail": exc.detail,
        "errors": [{"row": p.row, "column": p.column, "message": p.message} for p in exc.problems],
        "total": exc.total,
    }
    return Response(orjson.dumps(body), status, media_type=PROBLEM_JSON)


def _rate_limit_headers(exc: RateLimited) -> dict[str, str]:
    seconds = str(exc.retry_after)
    return {
        "Retry-After": seconds,
        "RateLimit-Limit": str(exc.limit),
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": seconds,
    }


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    body_problem = any(tuple(p.get("loc", ()))[:1] == ("body",) for p in problems)
    if body_problem and not _is_json(request.headers.get("content-type")):
        return problem(415, "Unsupported Media Type", "Send the body as application/json.")
    if any(p.get("type") == "json_invalid" for p in problems):
        return problem(400, "Malformed body", "The body is not valid JSON.")
    errors = [{"field": _field_name(p.get("loc", ())), "message": _message(p)} for p in problems]
    return problem(
        422,
        "Invalid input",
        f"{len(errors)} field(s) are invalid.",
        type_="https://stockroom.dev/problems/invalid_input",
        errors=errors,
    )


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    return problem(exc.status_code, _reason(exc.status_code), str(exc.detail), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StockroomError, _stockroom_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.openapi = _openapi_with_problems(app.openapi)  # type: ignore[method-assign]


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; `errors` lists each invalid field.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
# Errors any operation of that kind can answer with, beyond what its route declares.
_AUTH_ERRORS: dict[str, tuple[str, dict[str, bool]]] = {
    "401": ("Missing, invalid or revoked token", {"WWW-Authenticate": True}),
    "503": ("A dependency is down", {"Retry-After": True}),
}
_BODY_ERRORS: dict[str, tuple[str, dict[str, bool]]] = {"400": ("Malformed body", {})}
# A missing or wrong token can be answered 429 on any authenticated operation (per address),
# and every write can be (per user).
_RATE_LIMIT_ERRORS: dict[str, tuple[str, dict[str, bool]]] = {
    "429": (
        "Too many requests: writes per user, or requests without a valid token per address",
        dict.fromkeys(
            ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"), True
        ),
    )
}


def _openapi_with_problems(generate: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Document what the handlers above really send: every error as problem+json, and the
    401/429/503 (authenticated routes) and 400 (JSON bodies) that routes do not declare."""
    documented: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal documented
        if documented is None:
            documented = generate()
            _document_problems(documented)
        return documented

    return openapi


def _document_problems(schema: dict[str, Any]) -> None:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = _PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)  # replaced by Problem below
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            extra = dict(_AUTH_ERRORS) | _RATE_LIMIT_ERRORS if operation.get("security") else {}
            if "requestBody" in operation:
                extra |= _BODY_ERRORS
            for status, (description, headers) in extra.items():
                response = responses.setdefault(status, {"description": description})
                response.setdefault("headers", {}).update(
                    {
                        name: {"required": required, "schema": {"type": "string"}}
                        for name, required in headers.items()
                    }
                )
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _field_error(error: FieldError) -> dict[str, Any]:
    return {"field": error.field, "message": error.message}


def _field_name(loc: Sequence[Any]) -> str:
    """("body", "product_images", 2) -> "product_images[2]"; ("query", "limit") -> "limit"."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or (str(loc[0]) if loc else "body")


def _message(problem_: Any) -> str:
    kind = problem_.get("type", "")
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "missing":
        return "is required"
    message = str(problem_.get("msg", "is invalid"))
    return message.removeprefix("Value error, ")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"

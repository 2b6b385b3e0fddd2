"""One ASGI middleware per request: request id, structlog context, access log, metrics,
and a problem+json 500 (with the request id) for anything unhandled."""

from __future__ import annotations

import functools
import itertools
import re
import secrets
import time
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockroom.api.errors import problem
from stockroom.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger("stockroom.http")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


# A fresh id is a random per-process prefix and a counter: unique across processes like a
# uuid4, without a getrandom() call on every request.
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(1)


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = str(value.decode("latin-1"))
            if _SAFE_REQUEST_ID.match(candidate):
                return candidate
            break
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status: int | None = None
        header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("http.unhandled_error")
            if status is None:
                detail = f"An unexpected error occurred; quote request id {request_id}."
                response = problem(500, "Internal Server Error", detail)
                await response(scope, receive, send_with_id)
            status = 500
        finally:
            self._record(scope, status or 500, time.perf_counter() - started)
            structlog.contextvars.clear_contextvars()

    @staticmethod
    def _record(scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope["method"]
        _requests_counter(method, route, status).inc()
        _latency_histogram(method, route).observe(seconds)
        state: dict[str, Any] = scope.get("state", {})
        log.info(
            "http.request",
            method=method,
            route=route,
            path=scope["path"],
            status=status,
            duration_ms=round(seconds * 1000, 2),
            user_id=state.get("user_id"),
        )


# prometheus_client's labels() validates and looks up on every call; routes, methods and
# statuses are few, so the children are kept here.
@functools.lru_cache(maxsize=1024)
def _requests_counter(method: str, route: str, status: int) -> Counter:
    return HTTP_REQUESTS.labels(method, route, str(status))


@functools.lru_cache(maxsize=1024)
def _latency_histogram(method: str, route: str) -> Histogram:
    return HTTP_LATENCY.labels(method, route)

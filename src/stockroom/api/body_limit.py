"""Refuse request bodies over a size limit with 413, before they are read into memory:
by their Content-Length when declared, by counting the bytes when streamed."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockroom.api.errors import problem

MAX_JSON_BODY = 1024 * 1024  # a product with 20 long URLs and a full description is ~60 KB


class _BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing lets it through (it turns any other
    error into a 400) and the app's handler answers 413 as problem+json."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The body is larger than {max_bytes:,} bytes.")


class BodySizeLimitMiddleware:
    """`max_bytes` for every body, but those of the paths in `limits` (an exact path, or a
    prefix when it ends with "/"): file uploads have limits of their own."""

    def __init__(
        self, app: ASGIApp, max_bytes: int = MAX_JSON_BODY, limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._exact = {path: n for path, n in (limits or {}).items() if not path.endswith("/")}
        self._prefixes = [(path, n) for path, n in (limits or {}).items() if path.endswith("/")]

    def limit_for(self, path: str) -> int:
        if (exact := self._exact.get(path)) is not None:
            return exact
        return next((n for prefix, n in self._prefixes if path.startswith(prefix)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope["path"])
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length", b"")
        if declared.isdigit():
            if int(declared) > max_bytes:
                await self._refuse(max_bytes, scope, receive, send)
                return
            # The server frames the body by Content-Length: it cannot grow past it.
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body at all (a GET, a DELETE)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise _BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(max_bytes, scope, receive, send)

    async def _refuse(self, max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413, "Content Too Large", f"The body is larger than {max_bytes:,} bytes."
        )
        await response(scope, receive, send)

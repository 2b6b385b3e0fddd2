"""/media: processed images from the local storage backend, cached forever (their names
are content hashes, so a name never points at other bytes).

Every answer is sandboxed (`Content-Security-Policy: default-src 'none'; sandbox`) and
`nosniff`: a stored file opened as a page runs no script and reaches nothing on our origin.
"""

from __future__ import annotations

import os
from http import HTTPStatus

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from stockroom.api.errors import problem
from stockroom.domain.jobs import UPLOADS_PREFIX

UPLOADS_DIR = UPLOADS_PREFIX.rstrip("/")
IMMUTABLE = "public, max-age=31536000, immutable"
SANDBOX_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
}


class MediaFiles(StaticFiles):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Sandbox headers on every response start: 200, 206, 304, 416 and the errors that
        StaticFiles raises (404, 405), answered here as problem+json so they carry them too."""

        async def send_sandboxed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SANDBOX_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            if self.get_path(scope).split(os.sep, 1)[0] == UPLOADS_DIR:
                raise HTTPException(404)  # sources uploaded for jobs are not published
            await super().__call__(scope, receive, send_sandboxed)
        except HTTPException as exc:
            title = HTTPStatus(exc.status_code).phrase
            headers = dict(exc.headers or {})
            response = problem(exc.status_code, title, exc.detail, headers=headers)
            await response(scope, receive, send_sandboxed)

    async def check_config(self) -> None:
        """The root appears with the first stored image; until then every path is a 404
        (StaticFiles would answer 500 for a missing directory)."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = IMMUTABLE
        return response

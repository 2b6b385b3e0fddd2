"""GET /events: the caller's job, product-image and import changes as Server-Sent Events
(`event:` job | image | import, `data:` the resource's JSON, `id:` to resume from).

Every caller sees their own events only, admins included: the contract promises the caller's
changes, and one admin stream carrying every user's traffic would be the heaviest stream of
all. A comment line every `ping_seconds` keeps proxies from closing an idle stream. A client
that falls behind is cut off, never waited for: by its hub buffer (too many events waiting)
or after `send_timeout_seconds` on one write; it resumes with Last-Event-ID. Streams end when
the hub closes, and when the server shuts down: sse-starlette watches uvicorn's signal
handling; under granian, `end_streams_at_shutdown_signal` does that job.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Annotated

from fastapi import APIRouter, Header, Request
from sse_starlette.sse import AppStatus
from starlette.responses import Response

from stockroom.api.deps import CurrentUser, authenticated_user, get_services
from stockroom.api.event_stream import EventStream, StreamSettings, frame
from stockroom.domain.live import LiveHub

__all__ = ["StreamSettings", "end_streams_at_shutdown_signal", "frame", "router"]

router = APIRouter(tags=["events"])
_DEFAULT_SETTINGS = StreamSettings()


async def stream_events(request: Request) -> Response:
    """GET /events as a plain Starlette endpoint: a stream holds whatever its request
    handling built until it ends, and FastAPI's dependency solving (its exit stacks,
    solved values and wrappers) was a large share of an idle stream's memory. It
    authenticates with the same function and error shapes as the declared operation below,
    which documents it in the OpenAPI schema.
    """
    request.scope["route"] = _SERVING_ROUTE  # what the access log and metrics label it by
    user = await authenticated_user(request)
    hub: LiveHub = (await get_services(request)).live
    return EventStream(hub, user.id, request.headers.get("last-event-id"), _settings(request))


def _settings(request: Request) -> StreamSettings:
    """The defaults, unless the app holds others in `state.event_stream_settings` (tests,
    for quicker heartbeats)."""
    settings = getattr(request.app.state, "event_stream_settings", None)
    return settings if isinstance(settings, StreamSettings) else _DEFAULT_SETTINGS


# First in the router, so Starlette matches it before the FastAPI route. Starlette adds HEAD
# to a GET route: sse-starlette answers it with the headers alone, opening no stream.
router.add_route("/events", stream_events, methods=["GET"], include_in_schema=False)
_SERVING_ROUTE = router.routes[-1]


@router.get(
    "/events",
    status_code=200,  # for the OpenAPI document: EventStream's constructor does not say
    response_class=EventStream,
    responses={
        200: {
            "description": "The caller's events as they happen: `id:`, `event:` job | image | "
            "import, `data:` the resource's JSON",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        503: {"description": "Live status is unavailable"},
    },
    name="stream_events",
)
async def document_stream_events(
    user: CurrentUser,
    last_event_id: Annotated[str | None, Header(description="The last event id seen")] = None,
) -> Response:
    # The OpenAPI operation of `stream_events` above, which serves it: Starlette matches that
    # route first, so FastAPI never calls this one.
    raise AssertionError("GET /events is served by stream_events")


def end_streams_at_shutdown_signal(
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> Callable[[], None]:
    """On SIGTERM/SIGINT, end every open stream cleanly; returns what restores the handlers.

    granian lets open responses finish before it runs the lifespan shutdown, and tells them
    nothing, so without this an open stream holds a stopping worker forever. sse-starlette
    ends its streams once `AppStatus.should_exit` is set; the handler sets it, then calls the
    handler it replaced (the server's own shutdown goes on: asyncio and uvloop learn of the
    signal through their wakeup fd, whatever the Python-level handler is).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # handlers can only be set there; threaded workers go without
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def on_signal(signum: int, stack: FrameType | None) -> None:
        AppStatus.should_exit = True
        handler = previous.get(signal.Signals(signum))
        if callable(handler):
            handler(signum, stack)
        elif handler == signal.SIG_DFL:  # nobody else handles it: die as we would have
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in signals:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is on_signal:
                signal.signal(sig, handler)

    return restore

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

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Annotated

import anyio
import structlog
from fastapi import APIRouter, Depends, Header, Request
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus, SendTimeoutError
from starlette.types import Receive, Scope, Send

from stockroom.adapters.live.metrics import SSE_CLIENTS_DROPPED
from stockroom.api.deps import CurrentUser
from stockroom.domain.live import LiveHub, StreamedEvent, Subscription

router = APIRouter(tags=["events"])
log = structlog.get_logger("stockroom.events")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    ping_seconds: float = 15.0
    send_timeout_seconds: float = 30.0
    shutdown_grace_seconds: float = 1.0  # to send the last chunk before being cancelled


async def get_stream_settings() -> StreamSettings:
    """The defaults; tests override this dependency for quicker heartbeats."""
    return StreamSettings()


async def get_live_hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.services.live
    return hub


async def open_subscription(
    user: CurrentUser,
    hub: Annotated[LiveHub, Depends(get_live_hub)],
    last_event_id: Annotated[str | None, Header(description="The last event id seen")] = None,
) -> AsyncIterator[Subscription]:
    """Subscribed before the response starts (a Redis outage is a 503, not a dead stream),
    unsubscribed once it ends."""
    async with hub.subscribe(user.id, last_event_id) as events:
        yield events


class _EventStream(EventSourceResponse):
    """Counts a client cut off for not reading, instead of reporting it as a server error."""

    media_type = "text/event-stream"  # what the OpenAPI document says the route returns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            SSE_CLIENTS_DROPPED.labels(reason="send_timeout").inc()
            log.info("events.client_dropped", reason="send_timeout")


@router.get(
    "/events",
    response_class=_EventStream,
    responses={
        200: {
            "description": "The caller's events as they happen: `id:`, `event:` job | image | "
            "import, `data:` the resource's JSON",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        503: {"description": "Live status is unavailable"},
    },
)
async def stream_events(
    events: Annotated[Subscription, Depends(open_subscription)],
    settings: Annotated[StreamSettings, Depends(get_stream_settings)],
) -> EventSourceResponse:
    shutdown = anyio.Event()  # set by sse-starlette when the server shuts down
    return _EventStream(
        _frames(events, shutdown),
        ping=settings.ping_seconds,
        send_timeout=settings.send_timeout_seconds,
        sep="\n",
        shutdown_event=shutdown,
        shutdown_grace_period=settings.shutdown_grace_seconds,
    )


async def _frames(events: Subscription, shutdown: anyio.Event) -> AsyncIterator[bytes]:
    """The events' frames until the stream ends; at shutdown it ends at once, so the response
    finishes properly (a client sees the end of the body, not a broken connection)."""

    async def end_at_shutdown() -> None:
        await shutdown.wait()
        events.end()

    watcher = asyncio.get_running_loop().create_task(end_at_shutdown())
    try:
        async for event in events:
            yield frame(event)
    finally:
        watcher.cancel()


def frame(event: StreamedEvent) -> bytes:
    """One event in the SSE wire format; a line break in the data starts another data line."""
    lines = event.data.splitlines() or [b""]
    data = b"".join(b"data: %s\n" % line for line in lines)
    return b"id: %s\nevent: %s\n%s\n" % (event.id.encode(), event.kind.encode(), data)


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

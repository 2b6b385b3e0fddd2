"""The response behind GET /events: one user's live events as Server-Sent Events, built to be
held open by thousands of idle clients at once.

sse-starlette's own `__call__` runs four tasks per stream in an anyio task group (sender,
pinger, shutdown listener, disconnect listener). With thousands of idle streams their objects
were most of a stream's memory, and every full garbage collection walks them all. Here one
loop sends both events and heartbeats (the subscription's wait ends at the next heartbeat's
time), one task per stream watches for the client's disconnect, and one task per process
(`_OPEN_STREAMS`) ends every stream at shutdown, through sse-starlette's shutdown detection.
sse-starlette still builds the headers, the heartbeat comment and the timeout error, and
answers anything but a GET.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.event import ensure_bytes
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from stockroom.adapters.live.metrics import SSE_CLIENTS_DROPPED
from stockroom.domain.live import LiveHub, StreamedEvent, Subscription

log = structlog.get_logger("stockroom.events")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    ping_seconds: float = 15.0
    send_timeout_seconds: float = 30.0
    shutdown_grace_seconds: float = 1.0  # to send the last chunk before being cut


class EventStream(EventSourceResponse):
    """A user's events, from `last_event_id` when given, and a heartbeat comment every
    `ping_seconds`; a write that blocks `send_timeout_seconds` drops the client, counted as
    such rather than reported as a server error.

    Subscribes before the response starts, so an unreachable hub is an error answer (503),
    not a dead stream; unsubscribes when the stream ends: the client leaves, the hub closes
    it (a slow client, the hub's shutdown) or the server shuts down.
    """

    media_type = "text/event-stream"  # what the OpenAPI document says the route returns

    def __init__(
        self, hub: LiveHub, user_id: int, last_event_id: str | None, settings: StreamSettings
    ) -> None:
        super().__init__(
            _NO_BODY,
            ping=settings.ping_seconds,
            send_timeout=settings.send_timeout_seconds,
            sep="\n",
        )
        # sse-starlette's lock keeps its pinger and sender apart; one loop sends everything
        # here and never takes it, so the streams share one instead of holding one each.
        self._send_lock = _UNUSED_LOCK
        self._hub = hub
        self._user_id = user_id
        self._last_event_id = last_event_id
        self._grace = settings.shutdown_grace_seconds
        self._events: Subscription | None = None
        self._limit: asyncio.Timeout | None = None  # rescheduled at shutdown: the grace period

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await super().__call__(scope, receive, send)
            return
        try:
            async with self._hub.subscribe(self._user_id, self._last_event_id) as events:
                await self._stream(events, receive, send)
        except SendTimeoutError:
            SSE_CLIENTS_DROPPED.labels(reason="send_timeout").inc()
            log.info("events.client_dropped", reason="send_timeout")

    def end_at_shutdown(self) -> None:
        """End the stream now; what is still being sent gets `shutdown_grace_seconds`."""
        if self._events is not None:
            self._events.end()
        if self._limit is not None:
            self._limit.reschedule(asyncio.get_running_loop().time() + self._grace)

    async def _stream(self, events: Subscription, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self._events = events
        disconnected = loop.create_task(_until_disconnect(receive, events))
        _OPEN_STREAMS.add(self)
        try:
            async with asyncio.timeout(None) as self._limit:
                start = {"type": "http.response.start", "status": self.status_code,
                         "headers": self.raw_headers}  # fmt: skip
                await self._send(send, start)
                ping = self.ping_interval  # 0: no heartbeat
                next_ping = loop.time() + ping
                while True:
                    wait = max(0.0, next_ping - loop.time()) if ping else None
                    try:
                        event = await events.next_within(wait)
                    except StopAsyncIteration:
                        break
                    if event is not None:
                        await self._send(send, _body(frame(event), more=True))
                    if ping and loop.time() >= next_ping:
                        await self._send(send, _body(self._heartbeat(), more=True))
                        next_ping = loop.time() + ping
                if not disconnected.done():  # a client that left is sent nothing more
                    await self._send(send, _body(b"", more=False))
        except TimeoutError:
            if self._limit is None or not self._limit.expired():
                raise  # a write timed out (SendTimeoutError), not the shutdown grace period
        finally:
            _OPEN_STREAMS.discard(self)
            disconnected.cancel()
            if disconnected.done() and not disconnected.cancelled():
                disconnected.exception()  # a failed receive: the client is gone all the same

    async def _send(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            if self._limit is not None and self._limit.expired():
                raise  # the grace period ran out, not this write's time
            raise SendTimeoutError from None

    def _heartbeat(self) -> bytes:
        """The comment sse-starlette's own pinger sends."""
        ping = (
            self.ping_message_factory()
            if self.ping_message_factory
            else ServerSentEvent(comment=f"ping - {datetime.now(UTC)}", sep=self.sep)
        )
        return ensure_bytes(ping, self.sep)


def frame(event: StreamedEvent) -> bytes:
    """One event in the SSE wire format; a line break in the data starts another data line."""
    lines = event.data.splitlines() or [b""]
    data = b"".join(b"data: %s\n" % line for line in lines)
    return b"id: %s\nevent: %s\n%s\n" % (event.id.encode(), event.kind.encode(), data)


def _body(chunk: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def _until_disconnect(receive: Receive, events: Subscription) -> None:
    """Ends the stream when the client goes away (or its connection fails)."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        events.end()


class _NoBody:
    """The body sse-starlette is given: a GET is streamed here, and it sends none on HEAD."""

    def __aiter__(self) -> _NoBody:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


_NO_BODY = _NoBody()
_UNUSED_LOCK = anyio.Lock()


class _OpenStreams:
    """The streams open in this process, and one task that ends them all at shutdown
    (once sse-starlette detects it); the task runs while any stream is open."""

    def __init__(self) -> None:
        self._streams: set[EventStream] = set()
        self._watcher: asyncio.Task[None] | None = None

    def add(self, stream: EventStream) -> None:
        self._streams.add(stream)
        loop = asyncio.get_running_loop()
        if self._watcher is None or self._watcher.done() or self._watcher.get_loop() is not loop:
            self._watcher = loop.create_task(self._end_at_shutdown())

    def discard(self, stream: EventStream) -> None:
        self._streams.discard(stream)
        if not self._streams and self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _end_at_shutdown(self) -> None:
        await EventSourceResponse._listen_for_exit_signal()
        for stream in tuple(self._streams):
            stream.end_at_shutdown()


_OPEN_STREAMS = _OpenStreams()

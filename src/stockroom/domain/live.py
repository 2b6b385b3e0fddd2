"""Live status: the port that fans a user's job, image and import changes out to their open
`GET /events` streams, on whichever API instance holds them.

Best effort by design: the database is the source of truth, so `publish` never raises (an
outage drops the event and logs), and a client that missed events resumes from the id of the
last one it saw, within `REPLAY_WINDOW_SECONDS`.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from stockroom.domain.errors import Unavailable

EventKind = Literal["job", "image", "import"]
EventId = tuple[int, int]
"""An event id as (milliseconds, sequence): ids of one user's events only ever grow."""

REPLAY_WINDOW_SECONDS = 15 * 60
"""How far back a reconnecting client is replayed what it missed (the API contract)."""

_EVENT_ID = re.compile(r"^(\d{1,15})-(\d{1,15})$")
_KINDS: dict[str, EventKind] = {"job": "job", "image": "image", "import": "import"}


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """A change to announce: whose it is, which kind of resource, and that resource's JSON."""

    user_id: int
    kind: EventKind
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    """A published event as a subscriber receives it; `id` is what `Last-Event-ID` echoes."""

    id: str
    kind: EventKind
    data: bytes


class LiveStatusUnavailable(Unavailable):
    code = "live_status_unavailable"
    title = "Live status updates are unavailable"


class Subscription(Protocol):
    """One stream of a user's events, in id order, each once; iteration ends with the stream."""

    def __aiter__(self) -> Subscription: ...

    async def __anext__(self) -> StreamedEvent: ...

    async def next_within(self, seconds: float | None) -> StreamedEvent | None:
        """The next event as `__anext__`, or None if none came within `seconds` (the stream
        is idle: time for a heartbeat). Raises StopAsyncIteration once the stream ended."""
        ...

    def end(self) -> None:
        """End the stream now, whatever is still waiting (the server is shutting down)."""
        ...


class LiveHub(Protocol):
    """Publishes events and streams each user's to their subscribers, in id order."""

    async def publish(self, event: LiveEvent) -> None:
        """Store and fan out `event`; never raises (on failure the event is dropped, logged)."""
        ...

    def subscribe(
        self, user_id: int, last_event_id: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        """The user's events as they come, preceded by those after `last_event_id` (at most
        `REPLAY_WINDOW_SECONDS` old) when given, each once and in order. The stream ends when
        the subscriber falls behind by more than its buffer, or the hub closes.

        Raises (on entering):
            LiveStatusUnavailable: the backend cannot be reached, or the hub is closed.
        """
        ...

    async def ping(self) -> None:
        """Raise LiveStatusUnavailable unless the backend answers."""
        ...

    async def close(self) -> None:
        """End every open stream and release the backend."""
        ...


def parse_event_id(value: str | None) -> EventId | None:
    """The id a client sent back, or None when it is absent or not one of ours."""
    if value is None:
        return None
    match = _EVENT_ID.match(value.strip())
    if match is None:
        return None
    return int(match[1]), int(match[2])


def parse_event_kind(value: str) -> EventKind | None:
    return _KINDS.get(value)


def format_event_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"

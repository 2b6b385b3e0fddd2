"""Live status in process memory: the embedded twin of the Redis hub, with the same ids,
replay window and slow-subscriber rule, for one process (embedded mode, tests).

Each user's recent events are a list ordered by id, pruned to the window and to
`max_events_per_user` as events arrive; users with nothing recent are forgotten. Ids are
"<ms>-<seq>" like Redis stream ids, increasing even if the clock steps back. Everything runs
on one event loop (in embedded mode the jobs run on the API's loop) and `publish` never
awaits, so an event is stored and handed to every open stream in one step.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from stockroom.adapters.live.options import LiveOptions
from stockroom.adapters.live.subscription import BufferedSubscription, Entry, Fanout
from stockroom.domain.live import (
    EventId,
    LiveEvent,
    LiveStatusUnavailable,
    StreamedEvent,
    format_event_id,
    parse_event_id,
)


def _id_of(entry: Entry) -> EventId:
    return entry[0]


class MemoryLiveHub:
    """In-process hub; `options` bound the buffers and what is kept for replay."""

    def __init__(self, options: LiveOptions | None = None) -> None:
        self._options = options or LiveOptions()
        self._window_ms = self._options.window_seconds * 1000
        self._recent: OrderedDict[int, list[Entry]] = OrderedDict()  # least recent user first
        self._last: EventId = (0, 0)
        self._fanout = Fanout()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, options: LiveOptions) -> MemoryLiveHub:
        """`memory://`; nothing in the URL is read."""
        return cls(options)

    async def publish(self, event: LiveEvent) -> None:
        if self._closed:
            return
        now_ms = self._now_ms()
        event_id = self._next_id(now_ms)
        entry = (event_id, StreamedEvent(format_event_id(event_id), event.kind, event.data))
        recent = self._recent.setdefault(event.user_id, [])
        recent.append(entry)
        self._recent.move_to_end(event.user_id)
        floor: EventId = (now_ms - self._window_ms, 0)
        expired = bisect.bisect_left(recent, floor, key=_id_of)
        del recent[: max(expired, len(recent) - self._options.max_events_per_user)]
        self._forget_idle_users(now_ms)
        self._fanout.deliver(event.user_id, entry)

    @asynccontextmanager
    async def subscribe(
        self, user_id: int, last_event_id: str | None = None
    ) -> AsyncIterator[BufferedSubscription]:
        if self._closed:
            raise LiveStatusUnavailable("the live hub is closed")
        cursor = parse_event_id(last_event_id)
        subscription = BufferedSubscription(
            user_id,
            self._last if cursor is None else cursor,
            capacity=self._options.buffer_size,
            catch_up=lambda after: self._stored_after(user_id, after),
            page_size=self._options.replay_page_size,
        )
        self._fanout.add(subscription)
        try:
            yield subscription
        finally:
            self._fanout.remove(subscription)

    async def ping(self) -> None:
        if self._closed:
            raise LiveStatusUnavailable("the live hub is closed")

    async def close(self) -> None:
        self._closed = True
        self._fanout.end_all()
        self._recent.clear()

    async def _stored_after(self, user_id: int, cursor: EventId) -> Sequence[Entry]:
        recent = self._recent.get(user_id, [])
        floor: EventId = (self._now_ms() - self._window_ms, 0)
        start = max(
            bisect.bisect_right(recent, cursor, key=_id_of),
            bisect.bisect_left(recent, floor, key=_id_of),
        )
        return recent[start : start + self._options.replay_page_size]

    def _now_ms(self) -> int:
        return int(self._options.clock() * 1000)

    def _next_id(self, now_ms: int) -> EventId:
        last_ms, last_seq = self._last
        self._last = (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)
        return self._last

    def _forget_idle_users(self, now_ms: int) -> None:
        """Drop the users whose newest event left the window (they are first in line)."""
        floor = now_ms - self._window_ms
        while self._recent:
            user_id, recent = next(iter(self._recent.items()))
            if recent and recent[-1][0][0] >= floor:
                return
            del self._recent[user_id]

"""One open stream's side of a live hub, the same for every backend: a bounded buffer that the
fan-out fills without ever waiting, and catch-up reads of the stored events that close any
gap between a cursor and the first live event.

A stream delivers ids in increasing order, each once: it remembers the last id it delivered
(its cursor) and skips anything not above it, so an event that is both read back from storage
and received live goes out once. The fan-out calls `resync()` whenever live delivery may have
missed events (a subscription just confirmed, or confirmed again after a lost connection); the
stream then reads the stored events after its cursor before it delivers live ones again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

from stockroom.adapters.live.metrics import SSE_CLIENTS_DROPPED, SSE_STREAMS_OPEN
from stockroom.domain.live import EventId, LiveStatusUnavailable, StreamedEvent

Entry = tuple[EventId, StreamedEvent]
CatchUp = Callable[[EventId], Awaitable[Sequence[Entry]]]
"""The stored events after an id, oldest first: at most a page, none older than the window."""


def _logger() -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)
    return logger


class BufferedSubscription:
    """An async iterator of one user's events for one stream; it ends when the hub closes it,
    when it falls more than `capacity` events behind, or when a catch-up read fails."""

    def __init__(
        self,
        user_id: int,
        cursor: EventId,
        *,
        capacity: int,
        catch_up: CatchUp,
        page_size: int,
    ) -> None:
        self.user_id = user_id
        self._cursor = cursor
        self._capacity = capacity
        self._catch_up = catch_up
        self._page_size = page_size
        # Made on first use: an idle stream, the common case, holds neither.
        self._live: deque[Entry] | None = None
        self._stored: deque[Entry] | None = None
        self._catch_up_due = True  # the first read covers what came before the subscription
        self._ended = False
        # What a waiting reader awaits; a bare future, not an asyncio.Event: thousands of
        # idle streams each hold one, and the state it wakes for is in the fields above.
        self._waiter: asyncio.Future[bool] | None = None

    def offer(self, entry: Entry) -> None:
        """Queue a live event; never waits. Past `capacity` waiting events, the stream ends
        (its client resumes with Last-Event-ID) rather than hold back or grow."""
        if self._ended:
            return
        if self._live is None:
            self._live = deque()
        if len(self._live) >= self._capacity:
            SSE_CLIENTS_DROPPED.labels(reason="buffer_full").inc()
            _logger().warning(
                "live.subscriber_dropped", user_id=self.user_id, buffered=self._capacity
            )
            self.end()
            return
        self._live.append(entry)
        self._wake()

    def resync(self) -> None:
        """Live delivery may have missed events: read the stored ones after the cursor next."""
        self._catch_up_due = True
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._live = self._stored = None
        self._wake()

    def __aiter__(self) -> BufferedSubscription:
        return self

    async def __anext__(self) -> StreamedEvent:
        event = await self.next_within(None)
        assert event is not None  # only a wait with a time limit comes back empty
        return event

    async def next_within(self, seconds: float | None) -> StreamedEvent | None:
        deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
        while not self._ended:
            if self._stored:
                event = self._take(self._stored.popleft())
            elif self._catch_up_due:
                await self._read_stored()
                continue
            elif self._live:
                event = self._take(self._live.popleft())
            else:
                if not await self._woken_by(deadline):
                    return None
                continue
            if event is not None:
                return event
        raise StopAsyncIteration

    async def _woken_by(self, deadline: float | None) -> bool:
        """Wait for `_wake`; False if `deadline` (loop time) came first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    def _take(self, entry: Entry) -> StreamedEvent | None:
        event_id, event = entry
        if event_id <= self._cursor:
            return None  # delivered already (read back and received live)
        self._cursor = event_id
        return event

    async def _read_stored(self) -> None:
        self._catch_up_due = False
        try:
            page = await self._catch_up(self._cursor)
        except LiveStatusUnavailable as exc:
            # Delivering live events now would skip the unread ones: end instead, and let the
            # client resume from its last id.
            _logger().warning("live.catch_up_failed", user_id=self.user_id, detail=str(exc))
            self.end()
            return
        if self._ended:
            return
        if page:
            self._stored = deque(page)  # empty (or None) while a catch-up read runs
        if len(page) >= self._page_size:
            self._catch_up_due = True  # more stored events after this page


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Fanout:
    """The open subscriptions of one process, by user; hands each event to its user's."""

    def __init__(self) -> None:
        self._by_user: dict[int, set[BufferedSubscription]] = {}

    def users(self) -> Iterable[int]:
        return self._by_user.keys()

    def add(self, subscription: BufferedSubscription) -> bool:
        """Register it; True if it is its user's first here."""
        SSE_STREAMS_OPEN.inc()
        subscriptions = self._by_user.setdefault(subscription.user_id, set())
        subscriptions.add(subscription)
        return len(subscriptions) == 1

    def remove(self, subscription: BufferedSubscription) -> bool:
        """End and forget it; True if it was its user's last here."""
        subscription.end()
        subscriptions = self._by_user.get(subscription.user_id)
        if subscriptions is None or subscription not in subscriptions:
            return False
        SSE_STREAMS_OPEN.dec()
        subscriptions.discard(subscription)
        if subscriptions:
            return False
        del self._by_user[subscription.user_id]
        return True

    def deliver(self, user_id: int, entry: Entry) -> None:
        for subscription in tuple(self._by_user.get(user_id, ())):
            subscription.offer(entry)

    def resync(self, user_id: int) -> None:
        for subscription in self._by_user.get(user_id, ()):
            subscription.resync()

    def end_all(self) -> None:
        for subscriptions in self._by_user.values():
            for subscription in subscriptions:
                subscription.end()

"""The fan-out side of the Redis hub: one reader task per process keeps one connection
subscribed to the channels of the users with a stream open here (SUBSCRIBE on the first,
UNSUBSCRIBE after the last) and hands each announcement to their streams' buffers without
waiting.

Redis sends an event only to the processes that hold one of its user's streams; 1,000 idle
streams cost one connection and one PING every `ping_interval` (2 s by default). (Rejected:
one blocking XREAD over every open stream's key, which costs O(streams) per call and must be
interrupted whenever a user joins.)

A channel counts as confirmed once Redis has answered the last SUBSCRIBE sent for it on the
current connection; at each confirmation the user's streams catch up from storage
(`Fanout.resync`). A lost connection unconfirms every channel; the reader reconnects (at once
after a drop, backing off while Redis is unreachable) and subscribes them all again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import structlog
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from stockroom.adapters.live.subscription import Entry, Fanout
from stockroom.background import cancel_requested, stop_task
from stockroom.domain.live import StreamedEvent, parse_event_id, parse_event_kind

MIN_RECONNECT_DELAY_SECONDS = 0.1
MAX_RECONNECT_DELAY_SECONDS = 5.0


def _logger() -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)
    return logger


def parse_entry(raw_id: str, raw_kind: bytes, data: bytes) -> Entry | None:
    """An event as Redis holds it (a stream entry, an announcement), or None if not ours."""
    event_id = parse_event_id(raw_id)
    kind = parse_event_kind(raw_kind.decode(errors="replace"))
    if event_id is None or kind is None:
        return None
    return event_id, StreamedEvent(raw_id, kind, data)


class _LinkSilent(Exception):
    """Redis stopped answering the reader's PINGs."""


class _Link:
    """One pub/sub connection, and the SUBSCRIBEs sent on it that Redis has not answered."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.came_up = False
        self.closed = False
        self._unanswered: Counter[bytes] = Counter()

    async def send(self, command: str, channels: Sequence[str]) -> None:
        """Send (UN)SUBSCRIBE; a failure is the reader's to notice (it reconnects)."""
        if self.closed or not self.connection.is_connected:
            return  # never let redis-py reconnect this connection behind the reader's back
        if command == "SUBSCRIBE":
            self._unanswered.update(channel.encode() for channel in channels)
        with contextlib.suppress(RedisError, OSError):
            await self.connection.send_command(command, *channels)

    def answered(self, channel: bytes) -> bool:
        """Note a SUBSCRIBE reply; True if no later SUBSCRIBE of the channel is pending."""
        self._unanswered[channel] -= 1
        if self._unanswered[channel] > 0:
            return False
        del self._unanswered[channel]
        return True

    async def close(self) -> None:
        self.closed = True
        with contextlib.suppress(RedisError, OSError):
            await self.connection.disconnect(nowait=True)


class ChannelReader:
    """Subscribes this process to its users' channels and feeds their streams.

    `connect` makes the reader's own connection (outside any pool); `after_drop` runs when a
    connection that was up is lost (the hub drops its idle pooled connections then).
    """

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        fanout: Fanout,
        *,
        channel_prefix: str,
        timeout: float,
        after_drop: Callable[[], Awaitable[None]],
        ping_interval: float,
    ) -> None:
        self._connect = connect
        self._fanout = fanout
        self._prefix = channel_prefix
        self._prefix_bytes = channel_prefix.encode()
        self._timeout = timeout
        self._after_drop = after_drop
        self._ping_interval = ping_interval
        self._confirmed: dict[int, asyncio.Event] = {}  # one per user with a stream open here
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._unreachable = False

    @property
    def unreachable(self) -> bool:
        """True while Redis refuses the reader's connection (new streams fail fast)."""
        return self._link is None and self._unreachable

    def channel(self, user_id: int) -> str:
        return f"{self._prefix}{user_id}"

    def confirmation(self, user_id: int) -> asyncio.Event:
        """Set while the user's channel is subscribed on a live connection."""
        return self._confirmed[user_id]

    async def join(self, user_id: int) -> asyncio.Event:
        """Subscribe to a user's channel (their first stream here); see `confirmation`."""
        confirmed = self._confirmed[user_id] = asyncio.Event()
        self._start()
        # Without a link, the reader subscribes to every user's channel once connected.
        if self._link is not None:
            await self._link.send("SUBSCRIBE", [self.channel(user_id)])
        return confirmed

    async def leave(self, user_id: int) -> None:
        """Unsubscribe from a user's channel (their last stream here ended)."""
        del self._confirmed[user_id]
        if self._link is not None:
            await self._link.send("UNSUBSCRIBE", [self.channel(user_id)])

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._keep_listening(), name="live-reader"
            )

    async def _keep_listening(self) -> None:
        delay = MIN_RECONNECT_DELAY_SECONDS
        while not cancel_requested():
            link = _Link(self._connect())
            try:
                await self._listen(link)
            except (RedisError, OSError, _LinkSilent) as exc:
                self._lost(link, exc)
            except Exception as exc:  # a bug must not end live status for good
                _logger().exception("live.reader_failed")
                self._lost(link, exc)
            finally:
                await link.close()
            if link.came_up:
                await self._after_drop()
            # Back at once after a drop; slower and slower while Redis stays unreachable.
            delay = (
                MIN_RECONNECT_DELAY_SECONDS
                if link.came_up
                else min(delay * 2, MAX_RECONNECT_DELAY_SECONDS)
            )
            await asyncio.sleep(delay)

    async def _listen(self, link: _Link) -> None:
        connection = link.connection
        await connection.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
        link.came_up = True
        # No await from here to the SUBSCRIBE: a user joining from now on sends their own.
        self._link = link
        channels = [self.channel(user_id) for user_id in self._fanout.users()]
        if self._unreachable:
            self._unreachable = False
            _logger().warning("live.recovered", operation="listen")
        if channels:
            await link.send("SUBSCRIBE", channels)
        loop = asyncio.get_running_loop()
        heard = loop.time()
        next_ping = heard + self._ping_interval
        while True:
            # push_request: on RESP3 (redis-py 8 default) announcements are push replies.
            reply = await connection.read_response(timeout=self._ping_interval, push_request=True)
            now = loop.time()
            if reply is not None:
                heard = now
                self._handle(link, reply)
            if now >= next_ping:
                if now - heard > self._ping_interval + self._timeout:
                    raise _LinkSilent("no answer to PING")
                await connection.send_command("PING")
                next_ping = now + self._ping_interval

    def _handle(self, link: _Link, reply: object) -> None:
        if not isinstance(reply, list) or len(reply) != 3:
            return  # a PONG
        kind, channel, payload = reply
        prefix = self._prefix_bytes
        suffix = channel[len(prefix) :] if isinstance(channel, bytes) else b""
        if not isinstance(channel, bytes) or not channel.startswith(prefix) or not suffix.isdigit():
            return
        user_id = int(suffix)
        if kind == b"message" and isinstance(payload, bytes):
            event_id, _, rest = payload.partition(b" ")
            event_kind, _, data = rest.partition(b" ")
            entry = parse_entry(event_id.decode(errors="replace"), event_kind, data)
            if entry is not None:
                self._fanout.deliver(user_id, entry)
        elif kind == b"subscribe" and link.answered(channel):
            confirmed = self._confirmed.get(user_id)
            if confirmed is not None:
                confirmed.set()
                self._fanout.resync(user_id)  # read what was stored before this point

    def _lost(self, link: _Link, exc: BaseException) -> None:
        if self._link is link:
            self._link = None
        for confirmed in self._confirmed.values():
            confirmed.clear()  # streams wait, then catch up once subscribed again
        error = {"error": type(exc).__name__, "detail": str(exc)}
        if link.came_up:
            _logger().warning("live.disconnected", **error)
        elif not self._unreachable:
            self._unreachable = True
            _logger().warning("live.unavailable", operation="listen", **error)

"""Live status on Redis: a Stream per user for replay, a channel per user for fan-out, and one
pub/sub connection per process however many streams it serves (`redis_channels.py`).

Keys and channels (under `key_prefix`): `events:{user_id}` is a Redis Stream of the user's
events, whose entry ids are the SSE ids; `live:{user_id}` is the channel that announces them.
`publish` is one Lua script: XADD with MINID trimming to the window on Redis's clock, a length
cap, PEXPIRE (an idle user's stream vanishes with the window), and PUBLISH of
"<id> <kind> <json>". Being atomic, every event is either stored before a subscription is
confirmed or announced after it: never neither.

No gap, no duplicate: a stream starts from a cursor (the Last-Event-ID, else the user's newest
entry, read before subscribing); once its channel subscription is confirmed it reads the
entries after the cursor (XRANGE), then the announcements, skipping ids it already delivered.
When the connection is lost, every stream waits; when it is back and each channel confirmed
again, every stream reads what it missed from its cursor the same way.

Outages: `publish` goes through a circuit breaker (a dead Redis costs one timeout per cooldown,
not one per event) and drops the event; a new stream gets LiveStatusUnavailable.
Needs Redis >= 6.2 (XADD MINID, exclusive XRANGE ranges), standalone or Sentinel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from stockroom.adapters.cache.breaker import CircuitBreaker
from stockroom.adapters.live.metrics import LIVE_PUBLISH_FAILURES
from stockroom.adapters.live.options import LiveOptions
from stockroom.adapters.live.redis_channels import ChannelReader, parse_entry
from stockroom.adapters.live.subscription import BufferedSubscription, Entry, Fanout
from stockroom.adapters.redis_pool import fail_fast_pool
from stockroom.domain.live import (
    EventId,
    LiveEvent,
    LiveStatusUnavailable,
    format_event_id,
    parse_event_id,
)

MAX_CONNECTIONS = 16  # per process, for publishing and replays; the reader has its own

# KEYS: the user's stream. ARGV: window ms, length cap, kind, data, channel.
_PUBLISH_LUA = """
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
local id = redis.call('XADD', KEYS[1], 'MINID', '~', string.format('%d', floor), '*',
    'k', ARGV[3], 'd', ARGV[4])
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[5], id .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return id
"""


def _logger() -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)
    return logger


class RedisLiveHub:
    """The production hub; `publish` never raises, `subscribe` raises LiveStatusUnavailable."""

    def __init__(
        self,
        client: Redis,
        connect: Callable[[], AbstractConnection],
        options: LiveOptions,
        *,
        breaker: CircuitBreaker,
    ) -> None:
        self._client = client
        self._options = options
        self._breaker = breaker
        self._window_ms = options.window_seconds * 1000
        self._stream_prefix = f"{options.key_prefix}events:"
        self._publish_script = client.register_script(_PUBLISH_LUA)
        self._fanout = Fanout()
        self._channels = ChannelReader(
            connect,
            self._fanout,
            channel_prefix=f"{options.key_prefix}live:",
            timeout=options.socket_timeout,
            after_drop=self._drop_idle_connections,
            ping_interval=options.ping_interval,
        )
        self._failing = False  # the last command failed (logged once per outage)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, options: LiveOptions) -> RedisLiveHub:
        """Build the clients without connecting; no retries, so one failure costs one timeout."""
        pool = fail_fast_pool(url, timeout=options.socket_timeout, max_connections=MAX_CONNECTIONS)

        def connect() -> AbstractConnection:
            # The reader's own connection, outside the pool, with the URL's settings.
            connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
            return connection

        breaker = CircuitBreaker(cooldown=options.breaker_cooldown)
        return cls(Redis.from_pool(pool), connect, options, breaker=breaker)

    async def publish(self, event: LiveEvent) -> None:
        if self._closed:
            return
        keys = [self._stream(event.user_id)]
        args: list[str | int | bytes] = [
            self._window_ms,
            self._options.max_events_per_user,
            event.kind,
            event.data,
            self._channels.channel(event.user_id),
        ]
        try:
            async with self._guarded("publish"):
                await self._publish_script(keys=keys, args=args)
        except LiveStatusUnavailable:
            LIVE_PUBLISH_FAILURES.inc()  # best effort: the database has the change

    @contextlib.asynccontextmanager
    async def subscribe(
        self, user_id: int, last_event_id: str | None = None
    ) -> AsyncIterator[BufferedSubscription]:
        if self._closed:
            raise LiveStatusUnavailable("the live hub is closed")
        if self._channels.unreachable:
            raise LiveStatusUnavailable("redis is unreachable")  # the reader cannot connect
        cursor = parse_event_id(last_event_id)
        if cursor is None:
            cursor = await self._newest_id(user_id)
        subscription = BufferedSubscription(
            user_id,
            cursor,
            capacity=self._options.buffer_size,
            catch_up=lambda after: self._stored_after(user_id, after),
            page_size=self._options.replay_page_size,
        )
        try:
            confirmed = await asyncio.shield(self._join(subscription))
            try:
                async with asyncio.timeout(self._options.subscribe_timeout):
                    await confirmed.wait()
            except TimeoutError:
                raise LiveStatusUnavailable("redis did not confirm the subscription") from None
            yield subscription
        finally:
            await asyncio.shield(self._leave(subscription))

    async def ping(self) -> None:
        async with self._translated("ping"):
            await self._client.ping()

    async def close(self) -> None:
        self._closed = True
        self._fanout.end_all()
        await self._channels.close()
        await self._client.aclose()

    def _stream(self, user_id: int) -> str:
        return f"{self._stream_prefix}{user_id}"

    async def _join(self, subscription: BufferedSubscription) -> asyncio.Event:
        if self._fanout.add(subscription):
            return await self._channels.join(subscription.user_id)
        return self._channels.confirmation(subscription.user_id)

    async def _leave(self, subscription: BufferedSubscription) -> None:
        if self._fanout.remove(subscription):
            await self._channels.leave(subscription.user_id)

    async def _newest_id(self, user_id: int) -> EventId:
        async with self._translated("subscribe"):
            newest = await self._client.xrevrange(self._stream(user_id), "+", "-", count=1)
        for raw_id, _ in newest if isinstance(newest, list) else ():
            parsed = parse_event_id(raw_id.decode()) if isinstance(raw_id, bytes) else None
            if parsed is not None:
                return parsed
        return (0, 0)

    async def _stored_after(self, user_id: int, cursor: EventId) -> Sequence[Entry]:
        floor: EventId = (int(self._options.clock() * 1000) - self._window_ms, 0)
        start = f"({format_event_id(cursor)}" if cursor >= floor else format_event_id(floor)
        async with self._translated("replay"):
            entries = await self._client.xrange(
                self._stream(user_id), start, "+", count=self._options.replay_page_size
            )
        return _entries(entries)

    async def _drop_idle_connections(self) -> None:
        """Whatever broke the reader's connection (a restart, the network) broke the idle
        pooled ones too: drop them, so the streams' catch-up reads do not fail on them."""
        with contextlib.suppress(RedisError, OSError):
            await self._client.connection_pool.disconnect(inuse_connections=False)

    @contextlib.asynccontextmanager
    async def _guarded(self, operation: str) -> AsyncIterator[None]:
        """`_translated` behind the breaker: for publishing, the hot path, so that a dead
        Redis costs one timeout per cooldown rather than one per event.

        Raises:
            LiveStatusUnavailable: the breaker is open, or Redis failed (the breaker opens).
        """
        if not self._breaker.allow():
            raise LiveStatusUnavailable("live status circuit breaker is open")
        try:
            async with self._translated(operation):
                yield
        except LiveStatusUnavailable:
            self._breaker.record_failure()
            raise
        self._breaker.record_success()

    @contextlib.asynccontextmanager
    async def _translated(self, operation: str) -> AsyncIterator[None]:
        """The one place Redis errors become LiveStatusUnavailable; logged once per outage.

        Raises:
            LiveStatusUnavailable: Redis failed or did not answer in time.
        """
        try:
            yield
        except (RedisError, OSError) as exc:
            if not self._failing:
                self._failing = True
                _logger().warning(
                    "live.unavailable",
                    operation=operation,
                    error=type(exc).__name__,
                    detail=str(exc),
                )
            raise LiveStatusUnavailable(f"redis {operation} failed: {exc}") from exc
        if self._failing:
            self._failing = False
            _logger().warning("live.recovered", operation=operation)


def _entries(reply: object) -> list[Entry]:
    """The entries of an XRANGE / XREVRANGE reply: [(id, {field: value}), ...]."""
    found: list[Entry] = []
    for raw_id, fields in reply if isinstance(reply, list) else ():
        if isinstance(raw_id, bytes) and isinstance(fields, dict):
            entry = parse_entry(raw_id.decode(), fields.get(b"k", b""), fields.get(b"d", b""))
            if entry is not None:
                found.append(entry)
    return found

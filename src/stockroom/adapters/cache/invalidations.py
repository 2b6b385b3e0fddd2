"""The invalidation channel of the near-cache: one Redis pub/sub subscription per cache.

Every invalidation (`RedisCache.invalidate`) publishes the key on the cache's channel in
the same Lua script that deletes the body; an epoch bump publishes `*`. Each process keeps one
non-blocking socket subscribed to that channel and applies what arrives:

* from the event loop's reader callback, as soon as the bytes are there, and
* synchronously, before every near-cache hit (`drain()`: one `recv` that usually finds nothing),
  so a message already delivered to this process is applied before a request can be answered
  from memory. Redis writes the message to subscribers in the same turn of its event loop as it
  answers the writer, so by the time a writer's response has reached a client and that client's
  next request reaches another instance, the message is in that instance's socket.

While the subscription is not confirmed (connecting, reconnecting, or after a PING went
unanswered for `timeout` seconds) `healthy` is False and the near-cache neither serves nor
stores. Every (re)connection and every loss calls `on_flush` so entries kept while messages may
have been missed are dropped.

Not redis-py's asyncio PubSub: the drain must run without awaiting, so it reads the socket
itself (plain TCP or TLS, whichever the URL names) and parses with hiredis, the parser redis-py
uses when it is installed. redis-py's own (blocking) connection opens that socket, in a thread,
so the URL means the same here as for the cache's client: TLS settings, AUTH, timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import cast

import hiredis
import structlog
from redis import ConnectionPool
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.exceptions import RedisError
from redis.retry import Retry

from stockroom.background import cancel_requested, stop_task

log = structlog.get_logger(__name__)

PING_INTERVAL_SECONDS = 1.0
MAX_RECONNECT_DELAY_SECONDS = 5.0


def encode_command(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespReader:
    """RESP replies parsed by hiredis: `feed()` bytes, `values()` returns each complete reply
    (an error reply as a `RedisReplyError` value; bulk strings as bytes, integers as int).

    Raises:
        hiredis.ProtocolError: the stream is not RESP.
    """

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=RedisReplyError)

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def values(self) -> list[object]:
        found: list[object] = []
        reader = self._reader
        while (value := reader.gets()) is not False:
            found.append(value)
        return found


class RedisReplyError(Exception):
    pass


class InvalidationListener:
    """Keeps one subscription to `channel` alive; calls `on_message(payload)` per message."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        on_message: Callable[[bytes], None],
        on_flush: Callable[[], None],
        timeout: float,
    ) -> None:
        # Parsed as the cache's client parses it; only its connection class and arguments
        # are used (the listener owns one connection at a time, outside any pool).
        self._pool = ConnectionPool.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._connection: AbstractConnection | None = None
        self._channel = channel.encode()
        self._on_message = on_message
        self._on_flush = on_flush
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._reader = RespReader()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._healthy = False
        self._last_pong = 0.0
        self._lost = asyncio.Event()
        self._echoes: dict[bytes, list[asyncio.Future[None]]] = {}

    @property
    def healthy(self) -> bool:
        return self._healthy

    def expect(self, payload: bytes) -> asyncio.Future[None]:
        """A future resolved when `payload` next arrives (or the subscription is lost):
        a writer waits for the echo of its own invalidation before answering."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._echoes.setdefault(payload, []).append(future)
        return future

    def forget(self, payload: bytes, future: asyncio.Future[None]) -> None:
        waiting = self._echoes.get(payload, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._echoes.pop(payload, None)

    def _release(self, payload: bytes | None) -> None:
        """Resolve the writers waiting for `payload` (all of them when None)."""
        if payload is None:
            waiting = [f for futures in self._echoes.values() for f in futures]
            self._echoes.clear()
        else:
            waiting = self._echoes.pop(payload, [])
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def start(self) -> None:
        """Start the keeper task on the running loop (idempotent)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._lost = asyncio.Event()
            self._task = self._loop.create_task(self._keep_subscribed())

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        self._disconnect()

    def drain(self) -> None:
        """Apply whatever has already arrived, without waiting (the hit path calls this)."""
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                self._lose(f"recv failed: {exc}")
                return
            if not data:
                self._lose("connection closed by redis")
                return
            self._reader.feed(data)
            try:
                values = self._reader.values()
            except hiredis.ProtocolError as exc:
                self._lose(f"unreadable reply: {exc}")
                return
            for value in values:
                self._handle(value)
                if self._sock is not sock:
                    return  # lost on an error reply

    def _handle(self, value: object) -> None:
        if isinstance(value, RedisReplyError):
            self._lose(f"redis error: {value}")
            return
        if value == b"PONG":  # a subscribed PING's answer under RESP3 (RESP2: ["pong", ""])
            self._last_pong = time.monotonic()
            return
        if not isinstance(value, list) or not value:
            return  # +OK of AUTH
        kind = value[0]
        if kind == b"message" and len(value) == 3 and isinstance(value[2], bytes):
            self._on_message(value[2])
            self._release(value[2])
        elif kind == b"subscribe":
            self._on_flush()  # anything kept before this point may have missed messages
            self._healthy = True
            self._last_pong = time.monotonic()
            log.info("cache.near_subscribed", channel=self._channel.decode())
        elif kind == b"pong":
            self._last_pong = time.monotonic()

    def _lose(self, reason: str) -> None:
        if self._healthy:
            log.warning("cache.near_unsubscribed", channel=self._channel.decode(), reason=reason)
        self._healthy = False
        self._on_flush()
        self._disconnect()
        self._release(None)
        self._lost.set()

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        connection, self._connection = self._connection, None
        self._healthy = False
        self._reader = RespReader()
        if sock is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        if connection is not None:
            _close(connection)

    async def _keep_subscribed(self) -> None:
        delay = 0.1
        while not cancel_requested():
            try:
                await self._connect()
                delay = 0.1
                await self._watch()
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, RedisError) as exc:
                self._lose(f"connect failed: {exc}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY_SECONDS)

    async def _connect(self) -> None:
        """Connect, authenticate (and shake hands over TLS) with redis-py, then subscribe."""
        assert self._loop is not None
        self._lost.clear()
        pool = self._pool
        connection = cast(AbstractConnection, pool.connection_class(**pool.connection_kwargs))
        # Blocking, so in a thread; each step is bounded by the socket timeouts. If we are
        # cancelled meanwhile, the thread's connection is closed once it is done with it.
        connecting = asyncio.ensure_future(asyncio.to_thread(connection.connect))
        try:
            await asyncio.shield(connecting)
        except asyncio.CancelledError:
            connecting.add_done_callback(_close_when_done(connection))
            raise
        except BaseException:
            _close(connection)
            raise
        self._connection = connection
        sock: socket.socket | None = connection._sock  # from now on, read and written by us only
        if sock is None:
            raise ConnectionError("redis-py connected without a socket")
        sock.setblocking(False)
        self._sock = sock
        sock.send(encode_command("SUBSCRIBE", self._channel))  # into an empty socket buffer
        self._loop.add_reader(sock.fileno(), self.drain)

    async def _watch(self) -> None:
        """PING every interval; no PONG (or no subscription) within the timeout -> reconnect."""
        started = time.monotonic()
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_INTERVAL_SECONDS):
                    await self._lost.wait()
            if self._lost.is_set():
                return
            now = time.monotonic()
            since = now - (self._last_pong if self._healthy else started)
            if since > PING_INTERVAL_SECONDS + self._timeout:
                self._lose("no answer from redis")
                return
            sock = self._sock
            if sock is not None:
                try:
                    sock.send(encode_command("PING"))
                except OSError as exc:
                    self._lose(f"send failed: {exc}")
                    return


def _close(connection: AbstractConnection) -> None:
    connection.disconnect()  # type: ignore[no-untyped-call]  # unannotated in redis-py


def _close_when_done(connection: AbstractConnection) -> Callable[[asyncio.Future[None]], None]:
    def close(done: asyncio.Future[None]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved, so a failed connect is not reported as unhandled
        _close(connection)

    return close

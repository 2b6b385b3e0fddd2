"""The invalidation channel of the near-cache: one Redis pub/sub subscription per cache.

Every invalidation (`RedisProductCache.invalidate`) publishes the id on the cache's channel in
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

A hand-written RESP2 reader on a plain socket, not redis-py's PubSub: the drain must run
without awaiting, and only `message`, `subscribe` and `pong` replies ever arrive here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import structlog

log = structlog.get_logger(__name__)

PING_INTERVAL_SECONDS = 1.0
MAX_RECONNECT_DELAY_SECONDS = 5.0


def encode_command(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    pass


class RespReader:
    """Incremental RESP2 parser: `feed()` bytes, `values()` yields each complete reply."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def values(self) -> list[object]:
        found: list[object] = []
        while self._buffer:
            try:
                value, end = self._parse(0)
            except _Incomplete:
                break
            del self._buffer[:end]
            found.append(value)
        return found

    def _line(self, start: int) -> tuple[bytes, int]:
        end = self._buffer.find(b"\r\n", start)
        if end < 0:
            raise _Incomplete
        return bytes(self._buffer[start + 1 : end]), end + 2

    def _parse(self, start: int) -> tuple[object, int]:
        kind = bytes(self._buffer[start : start + 1])
        line, after = self._line(start)
        if kind in (b"+", b":"):
            return line, after
        if kind == b"-":
            return RedisReplyError(line.decode(errors="replace")), after
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, after
            if len(self._buffer) < after + size + 2:
                raise _Incomplete
            return bytes(self._buffer[after : after + size]), after + size + 2
        if kind == b"*":
            items: list[object] = []
            for _ in range(max(int(line), 0)):
                item, after = self._parse(after)
                items.append(item)
            return items, after
        raise ValueError(f"unexpected RESP type byte {kind!r}")


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
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._disconnect()

    def drain(self) -> None:
        """Apply whatever has already arrived, without waiting (the hit path calls this)."""
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
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
            except ValueError as exc:
                self._lose(str(exc))
                return
            for value in values:
                self._handle(value)

    def _handle(self, value: object) -> None:
        if isinstance(value, RedisReplyError):
            self._lose(f"redis error: {value}")
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
        self._healthy = False
        self._reader = RespReader()
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def _keep_subscribed(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._connect()
                delay = 0.1
                await self._watch()
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError) as exc:
                self._lose(f"connect failed: {exc}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY_SECONDS)

    async def _connect(self) -> None:
        assert self._loop is not None
        self._lost.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self._timeout):
                await self._loop.sock_connect(sock, self._address)
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        commands = b""
        if self._password is not None:
            auth = (self._username, self._password) if self._username else (self._password,)
            commands += encode_command("AUTH", *auth)
        commands += encode_command("SUBSCRIBE", self._channel)
        sock.send(commands)  # a few dozen bytes into an empty socket buffer
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

"""The httpcore network backend on asyncio streams, against real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpcore
import pytest
from tests.support.services import free_port

from stockroom.pipeline.asyncio_network import AsyncioBackend

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()


async def echo_then_hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(await reader.read(100))
        await writer.drain()
        await reader.read()  # until the client closes
    finally:
        writer.close()


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def test_writes_and_reads_on_a_connection(serve: Callable[[Handler], Awaitable[int]]) -> None:
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", await serve(echo_then_hold))
    await stream.write(b"ping", timeout=1)
    assert await stream.read(100, timeout=1) == b"ping"
    assert stream.get_extra_info("server_addr")[0] == "127.0.0.1"
    assert stream.get_extra_info("ssl_object") is None
    await stream.aclose()


async def test_an_idle_connection_is_readable_only_once_the_peer_has_gone(
    serve: Callable[[Handler], Awaitable[int]],
) -> None:
    """httpcore asks before reusing a kept-alive connection: readable means "closed"."""
    held = await AsyncioBackend().connect_tcp("127.0.0.1", await serve(echo_then_hold))
    closed = await AsyncioBackend().connect_tcp("127.0.0.1", await serve(close_at_once))
    await asyncio.sleep(0.1)
    assert held.get_extra_info("is_readable") is False
    assert closed.get_extra_info("is_readable") is True
    assert await closed.read(100, timeout=1) == b""  # end of stream, as httpcore expects
    await held.aclose()
    await closed.aclose()


async def test_a_silent_peer_is_a_read_timeout(serve: Callable[[Handler], Awaitable[int]]) -> None:
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", await serve(echo_then_hold))
    with pytest.raises(httpcore.ReadTimeout):
        await stream.read(100, timeout=0.05)
    await stream.aclose()


async def test_a_refused_connection_is_a_connect_error() -> None:
    with pytest.raises(httpcore.ConnectError):
        await AsyncioBackend().connect_tcp("127.0.0.1", free_port(), timeout=1)


async def test_unix_sockets_are_not_offered() -> None:
    with pytest.raises(httpcore.ConnectError):
        await AsyncioBackend().connect_unix_socket("/tmp/anything.sock")

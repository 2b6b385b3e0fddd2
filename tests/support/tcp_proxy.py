"""An asyncio TCP proxy on a free 127.0.0.1 port whose failure mode a test switches at runtime.

Modes: "forward" pipes bytes to the target; "refuse" resets every live and new connection;
"blackhole" accepts and reads but never answers and never forwards (a hung or partitioned peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Literal, Self

Mode = Literal["forward", "refuse", "blackhole"]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, the way a dead or restarted server looks to a client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Use as `async with TcpProxy(host, port) as proxy:`; `stop()` closes everything."""

    def __init__(self, target_host: str, target_port: int, mode: Mode = "forward") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connections_accepted = 0
        self._mode: Mode = mode
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        self._mode = mode
        if mode == "refuse":
            for writer in list(self._writers):
                _reset(writer)

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        if self._mode == "refuse":
            _reset(writer)
            return
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._mode == "forward":
                up_reader, upstream = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
                self._writers.add(upstream)
                pump = asyncio.create_task(self._pump(up_reader, writer))
                self._tasks.add(pump)
                pump.add_done_callback(self._tasks.discard)
            await self._pump(reader, upstream)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._writers.discard(end)
                    end.transport.abort()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter | None) -> None:
        """Copy `source` to `sink` while forwarding; drop bytes in blackhole mode."""
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if self._mode == "forward" and sink is not None:
                    sink.write(data)
                    await sink.drain()
                elif self._mode == "refuse":
                    break
        if sink is not None:
            sink.transport.abort()

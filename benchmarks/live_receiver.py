"""A webhook receiver for the `live` section: answers every request `200` with an empty body,
keeping connections alive, and does nothing else (no routing, no checks), so that the
sender's cost dominates. An asyncio protocol on uvloop: a few microseconds per request.

    python -m benchmarks.live_receiver PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class _Receiver(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            total = end + 4 + _content_length(bytes(self._buffer[:end]))
            if len(self._buffer) < total:
                return  # the rest of the body is still on its way
            del self._buffer[:total]
            assert self._transport is not None
            self._transport.write(_OK)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Receiver, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))

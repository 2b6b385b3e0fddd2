"""The image origin of the pipeline benchmark: serves the corpus over HTTP on loopback.

It shares the cores with the system under test, where a real origin would be another
machine, so it should cost as little CPU as it can: it parses the request line, then hands
the file to the kernel with sendfile (`python -m http.server` copies each file through
Python, a thread per request). GET only, files directly in the directory; anything else
is a 404. Connections are kept alive between requests, as a CDN keeps them
(`BENCH_ORIGIN_KEEPALIVE=0`: one request per connection, `Connection: close`).

    python -m benchmarks.origin PORT DIRECTORY
"""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.parse
from pathlib import Path

# A real origin is another machine, tens of milliseconds away: BENCH_ORIGIN_DELAY_MS
# holds every answer back that long (0 by default: the loopback's own speed).
_DELAY = float(os.environ.get("BENCH_ORIGIN_DELAY_MS", "0")) / 1000
_KEEPALIVE = os.environ.get("BENCH_ORIGIN_KEEPALIVE", "1") != "0"
_CONNECTION = b"" if _KEEPALIVE else b"Connection: close\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n" + _CONNECTION + b"\r\n"
_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


async def _serve_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, root: Path
) -> None:
    try:
        while await _answer(reader, writer, root) and _KEEPALIVE:
            pass
    except (ConnectionError, ValueError):
        pass  # a client that went away, or a malformed request line
    finally:
        writer.close()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, root: Path) -> bool:
    """One request on the connection; False when the client has closed it or asks to."""
    request = await reader.readline()
    if not request:
        return False
    keep = True
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        if line.lower().startswith(b"connection:") and b"close" in line.lower():
            keep = False
    method, target, _ = request.decode("latin-1").split(" ", 2)
    name = urllib.parse.unquote(urllib.parse.urlsplit(target).path).lstrip("/")
    file = root / name
    if method != "GET" or "/" in name or not name or not file.is_file():
        writer.write(_NOT_FOUND)
        await writer.drain()
        return keep
    if _DELAY:
        await asyncio.sleep(_DELAY)
    size = file.stat().st_size
    content_type = _TYPES.get(file.suffix.lower(), "application/octet-stream")
    writer.write(
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n".encode(
            "latin-1"
        )
        + _CONNECTION
        + b"\r\n"
    )
    with file.open("rb") as body:
        await asyncio.get_running_loop().sendfile(writer.transport, body)
    return keep


async def serve(port: int, root: Path) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, root), "127.0.0.1", port, backlog=256
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2]).resolve()))

"""The image origin of the pipeline benchmark: serves the corpus over HTTP on loopback.

It shares the two cores with the system under test, where a real origin would be another
machine, so it should cost as little CPU as it can: `python -m http.server` copied each file
through Python in 64 kB reads and writes with a thread per request (2.4-3.0 % of a core in
the end-to-end window); this one parses the request line, then hands the file to the
kernel with sendfile (1.9-2.7 %). GET only, one request per connection
(`Connection: close`), files directly in the directory; anything else is a 404.

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
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


async def _serve_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, root: Path
) -> None:
    try:
        request = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # headers: nothing in them changes the answer
        method, target, _ = request.decode("latin-1").split(" ", 2)
        name = urllib.parse.unquote(urllib.parse.urlsplit(target).path).lstrip("/")
        file = root / name
        if method != "GET" or "/" in name or not name or not file.is_file():
            writer.write(_NOT_FOUND)
            await writer.drain()
            return
        if _DELAY:
            await asyncio.sleep(_DELAY)
        size = file.stat().st_size
        content_type = _TYPES.get(file.suffix.lower(), "application/octet-stream")
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        with file.open("rb") as body:
            await asyncio.get_running_loop().sendfile(writer.transport, body)
    except (ConnectionError, ValueError):
        pass  # a client that went away, or a malformed request line
    finally:
        writer.close()


async def serve(port: int, root: Path) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, root), "127.0.0.1", port, backlog=256
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2]).resolve()))

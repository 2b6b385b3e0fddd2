"""A real HTTP server on a loopback address, serving the cases a guarded download must handle.

Routes: `/image.jpg`, `/image.png`, `/status/<code>`, `/slow/<seconds>` (late headers),
`/drip/<seconds>` (a body that trickles), `/huge/<bytes>` (declared length),
`/unsized/<bytes>` (no length: only counting can stop it), `/reset` (TCP RST),
`/redirect?to=<url>`, `/chain/<n>` (n redirects, then the JPEG), `/host` (echoes Host),
`/peer` (the client's port: which connection asked),
`/text.txt` (text served as image/jpeg), `/photo/<n>.jpg` (a distinct photo per n),
`/gzip/image.jpg` (the JPEG sent gzip-encoded though identity was asked for),
`/bomb/<MiB>` (zeros, gzip inside gzip: `Content-Encoding: gzip, gzip`),
`/set-cookie` (sets `session=<query value>`), `/cookie` (echoes the Cookie header).
"""

from __future__ import annotations

import functools
import gzip
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.support.images import photo_bytes

JPEG = photo_bytes(64, 48, "jpeg")


@functools.lru_cache(maxsize=512)
def numbered_photo(n: int) -> bytes:
    """A distinct photo-like JPEG per number, for runs over many images."""
    return photo_bytes(320, 240, "jpeg", seed=n)


PNG = photo_bytes(64, 48, "png", alpha=True)


@functools.lru_cache(maxsize=4)
def gzip_bomb(mebibytes: int) -> bytes:
    """`mebibytes` MiB of zeros, gzip-compressed twice: a few KB on the wire."""
    inner = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1024 * 1024)
    once = b"".join(inner.compress(zeros) for _ in range(mebibytes)) + inner.flush()
    return gzip.compress(once, 9)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        route, arg = parts[0], (parts[1] if len(parts) > 1 else "")
        if route == "image.jpg":
            self._send(200, JPEG, "image/jpeg")
        elif route == "image.png":
            self._send(200, PNG, "image/png")
        elif route == "status":
            self._send(int(arg), b"status", "text/plain")
        elif route == "slow":
            time.sleep(float(arg))
            self._send(200, JPEG, "image/jpeg")
        elif route == "drip":
            self._drip(float(arg))
        elif route == "huge":
            self._send(200, b"\xff" * int(arg), "image/jpeg")
        elif route == "unsized":
            self._unsized(int(arg))
        elif route == "reset":
            self._reset()
        elif route == "redirect":
            self._redirect(parse_qs(url.query)["to"][0])
        elif route == "chain":
            if int(arg) > 0:
                self._redirect(f"/chain/{int(arg) - 1}")
            else:
                self._send(200, JPEG, "image/jpeg")
        elif route == "text.txt":
            self._send(200, b"this is not an image\n" * 20, "image/jpeg")  # a lying header
        elif route == "photo":
            self._send(200, numbered_photo(int(arg.split(".")[0])), "image/jpeg")
        elif route == "host":
            self._send(200, (self.headers.get("Host") or "").encode(), "text/plain")
        elif route == "target":  # the request target, byte for byte as it arrived
            self._send(200, self.path.encode(), "text/plain")
        elif route == "gzip":
            self._send(200, gzip.compress(JPEG), "image/jpeg", encoding="gzip")
        elif route == "bomb":
            self._send(200, gzip_bomb(int(arg)), "image/jpeg", encoding="gzip, gzip")
        elif route == "set-cookie":
            value = parse_qs(url.query).get("value", ["a"])[0]
            self._send(200, JPEG, "image/jpeg", cookie=f"session={value}; Path=/")
        elif route == "cookie":
            self._send(200, (self.headers.get("Cookie") or "").encode(), "text/plain")
        elif route == "peer":
            self._send(200, str(self.client_address[1]).encode(), "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        encoding: str | None = None,
        cookie: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _drip(self, seconds: float) -> None:
        """One byte every 0.1 s for `seconds`: no single read is slow, the whole is."""
        count = max(1, int(seconds / 0.1))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(count))
        self.end_headers()
        for _ in range(count):
            self.wfile.write(b"\xff")
            self.wfile.flush()
            time.sleep(0.1)

    def _unsized(self, size: int) -> None:
        """A close-delimited body without Content-Length, sent in 64 KiB pieces."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for start in range(0, size, 65536):
                self.wfile.write(b"\xff" * min(65536, size - start))
        except OSError:
            pass  # the client hung up, as it should

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send a TCP RST.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client hung up on purpose (size cap, timeout)
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ImageServer:
    host: str
    port: int
    scheme: str = "http"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{path.lstrip('/')}"


@contextmanager
def serve_images(
    host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[ImageServer]:
    """Run the server in a daemon thread on a free port of `host` until the block ends;
    over HTTPS with `tls` (a server-side context holding the certificate)."""
    server = _QuietServer((host, 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield ImageServer(host, server.server_address[1], "https" if tls else "http")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""A webhook receiver on a loopback address that verifies each POST as a real one would:
`standardwebhooks.Webhook(secret).verify(body, headers)`, answering 400 when that fails.

Routes (POST): `/ok` (200 once verified), `/status/<code>`, `/flaky/<n>` (500 to the first
n requests, then 200), `/redirect` (302 to `/ok`),
`/hang/<seconds>` (answers late), `/drip/<seconds>` (a 200 whose body takes that long),
`/trickle` (the status line one byte per 0.1 s),
`/endless` (a 200 whose body never ends), `/close` (hangs up without an answer),
`/reset` (TCP RST), `/set-cookie` (200 with a cookie).
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it; `payload` is what verification returned."""

    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any | None
    verify_error: str | None


@dataclass
class WebhookReceiver:
    host: str
    port: int
    scheme: str = "http"
    requests: list[Received] = field(default_factory=list)
    endless_abandoned: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{path.lstrip('/')}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, secret: str) -> None:
        super().__init__((host, 0), _Handler)
        self.webhook = Webhook(secret)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.receiver = WebhookReceiver(host, self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the sender hung up on purpose (timeout, response cap)
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        verified = self._record(body)
        parts = self.path.strip("/").split("/")
        route, arg = parts[0], (parts[1] if len(parts) > 1 else "")
        if not verified:
            self._send(400, b"bad signature")
        elif route == "ok":
            self._send(200, b"ok")
        elif route == "status":
            self._send(int(arg), b"status")
        elif route == "flaky":  # /flaky/<n>: 500 to the first n requests, then 200
            seen = sum(r.path == self.path for r in self.server.receiver.requests)
            self._send(500 if seen <= int(arg) else 200, b"flaky")
        elif route == "redirect":
            self._send(302, b"", location="/ok")
        elif route == "hang":
            self.server.stopping.wait(float(arg))
            self._send(200, b"late")
        elif route == "trickle":
            self._trickle()
        elif route == "drip":
            self._drip(float(arg))
        elif route == "endless":
            self._endless()
        elif route == "close":
            self.close_connection = True  # hang up without a word
        elif route == "reset":
            self._reset()
        elif route == "set-cookie":
            self._send(200, b"ok", cookie="session=receiver; Path=/")
        else:
            self._send(404, b"not found")

    def _record(self, body: bytes) -> bool:
        headers = {name.lower(): value for name, value in self.headers.items()}
        payload: Any | None = None
        error: str | None = None
        try:
            payload = self.server.webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            error = str(exc)
        with self.server.lock:
            self.server.receiver.requests.append(Received(self.path, headers, body, payload, error))
        return error is None

    def _send(
        self, status: int, body: bytes, *, location: str | None = None, cookie: str | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        if location:
            self.send_header("Location", location)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self) -> None:
        """No single read is slow, yet the headers never finish: only a total budget ends it."""
        self.close_connection = True
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
            if self.server.stopping.wait(0.1):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def _drip(self, seconds: float) -> None:
        """A prompt 200 whose declared body comes one byte per 0.1 s."""
        count = max(1, int(seconds / 0.1))
        self.send_response(200)
        self.send_header("Content-Length", str(count))
        self.end_headers()
        for _ in range(count):
            if self.server.stopping.wait(0.1):
                return
            self.wfile.write(b".")
            self.wfile.flush()

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send a TCP RST.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _endless(self) -> None:
        """A 200 with a close-delimited body that goes on until the sender hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        piece = b"\x00" * 65536
        try:
            while not self.server.stopping.is_set():
                self.wfile.write(piece)
        except OSError:
            self.server.receiver.endless_abandoned.set()


@contextmanager
def receive_webhooks(
    secret: str, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[WebhookReceiver]:
    """Run a receiver in a daemon thread on a free port of `host` until the block ends;
    over HTTPS with `tls` (a server-side context holding the certificate)."""
    server = _Server(host, secret)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        server.receiver.scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.receiver
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

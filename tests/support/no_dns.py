"""Tests never reach the internet, DNS included. pytest-socket refuses Python sockets to other
hosts, but a name lookup goes through libc's resolver, which pytest-socket does not see: the
app's own requests to `images.example.com` (the embedded worker fetching a product's images)
would ask the machine's DNS server. With this, a name other than `localhost` fails at once, as
an unknown name does, and numeric addresses (`127.0.0.1`, `2130706433`, `::1`) still resolve."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


@contextmanager
def names_unresolvable() -> Iterator[None]:
    real = socket.getaddrinfo

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        if host is None or (isinstance(host, str) and host.lower() in LOOPBACK_NAMES):
            return real(host, port, family, type, proto, flags)
        try:
            return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = real

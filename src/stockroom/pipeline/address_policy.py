"""Which network addresses Stockroom may fetch from (SSRF defence).

Only public unicast addresses are allowed unless the policy allows private networks, or names
the exact (address, port) as an allowed endpoint. Hosts are resolved once and every address is
vetted; `fetch.py` then connects to a vetted address only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

import httpx

from stockroom.domain.errors import BlockedAddress, SourceUnreachable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

ALLOWED_SCHEMES = ("http", "https")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


async def system_resolver(host: str, port: int) -> Sequence[IPAddress]:
    """Every address the OS resolver gives for `host`; numeric forms like `2130706433` too.

    A canonical IP literal is its own answer: no executor hop to getaddrinfo. Anything else
    (names, `2130706433`, `127.1`, scoped IPv6) goes to the OS resolver, as before."""
    if "%" not in host:
        with contextlib.suppress(ValueError):
            return [ipaddress.ip_address(host)]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SourceUnreachable(f"cannot resolve {host!r}: {exc}") from exc
    # The scope of a link-local IPv6 address (`fe80::1%eth0`) is irrelevant to the check.
    found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return sorted(found, key=lambda ip: (ip.version, int(ip)))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address tunnelled in an IPv6 one (mapped, NAT64, 6to4, Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_public(ip: IPAddress) -> bool:
    """True for a globally routable unicast address, looking inside IPv6 tunnels of IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip.is_loopback:
        return False
    if ip.is_link_local or ip.is_private:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return False
    return ip.is_global


@dataclass(frozen=True)
class AddressPolicy:
    """What may be connected to. `also_allow` networks count as public (tests use it to
    serve from 127.0.0.2 while 127.0.0.1 stays refused); `allowed_endpoints` admits one
    (address, port) each, whatever the address (`serve --demo` fetches from itself this way,
    STOCKROOM_FETCH_ALLOWED_ORIGINS); `resolve` is injectable for tests."""

    allow_private: bool = False
    also_allow: Sequence[IPNetwork] = ()
    allowed_endpoints: Collection[tuple[IPAddress, int]] = ()
    resolve: Resolver = field(default=system_resolver)

    def permits(self, ip: IPAddress) -> bool:
        if any(ip.version == net.version and ip in net for net in self.also_allow):
            return True
        if self.allow_private:
            # Local development: anything unicast, but never "any address" or a group.
            return not (ip.is_unspecified or ip.is_multicast)
        return is_public(ip)

    def vet(self, ip: IPAddress, host: str, port: int | None = None) -> None:
        if port is not None and (ip, port) in self.allowed_endpoints:
            return
        if not self.permits(ip):
            raise BlockedAddress(f"{host} resolves to {ip}, which is not a public address")

    async def resolve_vetted(self, host: str, port: int) -> Sequence[IPAddress]:
        """Resolve once and vet every address: one bad answer refuses the host (rebinding)."""
        addresses = await self.resolve(host.strip("[]"), port)
        if not addresses:
            raise SourceUnreachable(f"{host} has no address")
        for ip in addresses:
            self.vet(ip, host, port)
        return addresses


def parse_fetchable_url(url: str | httpx.URL) -> httpx.URL:
    """An http(s) URL with a host, or BlockedAddress; credentials in URLs are refused too."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise BlockedAddress(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise BlockedAddress(f"only http and https URLs are allowed, not {parsed.scheme!r}")
    if not parsed.host:
        raise BlockedAddress("the URL has no host")
    if parsed.userinfo:
        raise BlockedAddress("URLs with credentials are not allowed")
    return parsed


async def check_url(url: str, policy: AddressPolicy) -> Sequence[IPAddress]:
    """Validate a URL (scheme, host, every resolved address) before storing or calling it."""
    parsed = parse_fetchable_url(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return await policy.resolve_vetted(parsed.host, port)

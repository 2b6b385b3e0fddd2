"""The one way Stockroom makes a request to a URL a user gave it (an image to download, a
webhook to deliver): an aiohttp session that only ever connects to addresses an
`AddressPolicy` permits, pinned at connect.

aiohttp has two ways to an address, and both are guarded:

- a hostname goes to the connector's resolver, `_VettingResolver`, which resolves it once,
  vets every answer (`AddressPolicy.resolve_vetted`) and hands back only vetted IPs, which
  the connector then connects to. TLS (SNI, the certificate check) and the Host header keep
  the hostname, so there is no window between the check and the connect to rebind in;
- an IP literal never reaches a resolver (aiohttp connects to it as it is), so
  `request_url` vets it before the request, by the very rule aiohttp uses to tell one.

So every request goes through `request_url`, on a session from `guarded_session`.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from collections.abc import Mapping

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from yarl import URL

from stockroom.domain.errors import BlockedAddress
from stockroom.pipeline.address_policy import AddressPolicy, IPAddress, parse_fetchable_url

__all__ = ["guarded_session", "request_url"]

_MAX_CONNECTIONS = 10


class _VettingResolver(AbstractResolver):
    """The connector's resolver: every address it returns has been vetted by the policy."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._policy.resolve_vetted(host, port)
        return [
            {
                "hostname": host,
                "host": str(ip),
                "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for ip in addresses
        ]

    async def close(self) -> None:
        return None


@functools.cache
def _verified_context() -> ssl.SSLContext:
    """certifi's CA bundle. Loading it takes milliseconds: once per process, not per request."""
    return httpx.create_ssl_context()


def guarded_session(
    policy: AddressPolicy,
    *,
    headers: Mapping[str, str],
    verify: ssl.SSLContext | None = None,  # the CA bundle's context by default
    auto_decompress: bool = True,
) -> aiohttp.ClientSession:
    """A session whose connections go to vetted addresses only. Make it on the event loop
    that will use it; request only URLs that `request_url` returned."""
    connector = aiohttp.TCPConnector(
        resolver=_VettingResolver(policy),
        use_dns_cache=False,  # each connect resolves and vets afresh (rebinding)
        limit=_MAX_CONNECTIONS,
        ssl=verify or _verified_context(),
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=dict(headers),
        # One session serves every user's requests: a cookie one server set for one user
        # must never travel with another's request. This jar keeps none.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=auto_decompress,
        timeout=aiohttp.ClientTimeout(total=None),  # each caller bounds its whole exchange
        trust_env=False,  # env proxies would route around the guarded connector
    )


def request_url(url: str | httpx.URL, policy: AddressPolicy) -> URL:
    """The URL to request: http(s), a host, no credentials, and a host that aiohttp takes
    for an IP literal (so connects to with no resolver) already vetted. BlockedAddress
    otherwise.

    httpx parses it, as `check_url` did at submission, and writes it encoded; yarl takes
    that as it is (`encoded=True`), so the bytes requested are the ones checked. Numeric
    IPv4 forms (`2130706433`, `127.1`) become the address they denote, as a browser's URL
    parser turns them into one (aiohttp refuses them as they are)."""
    target = URL(str(parse_fetchable_url(url)), encoded=True)
    host = target.raw_host
    if not host or not target.absolute or target.scheme not in ("http", "https"):
        raise BlockedAddress("only http and https URLs with a host are allowed")
    if target.user is not None or target.password is not None:
        raise BlockedAddress("URLs with credentials are not allowed")
    if not is_ip_address(host):
        return target  # a hostname: the connector's resolver vets it at connect
    ip = _ip_literal(host)
    port = target.port
    assert port is not None  # http and https have default ports
    policy.vet(ip, host, port)
    return target if str(ip) == host else target.with_host(str(ip))


def _ip_literal(host: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and not (isinstance(ip, ipaddress.IPv6Address) and ip.scope_id):
        return ip
    if ":" not in host:
        try:  # the forms inet_aton reads, as getaddrinfo and browsers do: 2130706433, 127.1
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass
    raise BlockedAddress(f"{host} is not an address that may be fetched")

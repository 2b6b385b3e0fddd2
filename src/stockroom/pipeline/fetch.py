"""Guarded download of source images: public addresses only, pinned at connect, size and time
capped, redirects followed by hand so that every hop is checked.

DNS pinning: httpx hands the hostname to our httpcore network backend, which resolves it once,
vets every address and connects to a vetted IP. TLS SNI, certificate checks and the Host header
still use the hostname, so there is no window between the check and the connect to rebind in.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore
import httpx

from stockroom.domain.errors import (
    BlockedAddress,
    FetchTimeout,
    ImageTooLarge,
    SourceClientError,
    SourceServerError,
    SourceUnreachable,
)
from stockroom.pipeline.address_policy import AddressPolicy, check_url, parse_fetchable_url
from stockroom.pipeline.asyncio_network import AsyncioBackend
from stockroom.pipeline.capped_body import read_capped

__all__ = [
    "AddressPolicy",
    "Fetched",
    "GuardedTransport",
    "ImageFetcher",
    "check_url",
    "fetch_image",
]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    "Accept": "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8",
    # Identity asked for; a server that compresses anyway is decoded under the same cap.
    "Accept-Encoding": "identity",
    "User-Agent": "Stockroom-ImageFetcher/1.0",
}


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded body; the Content-Type header is informative only, never trusted."""

    data: bytes
    final_url: str
    content_type_header: str | None


class _VettingBackend(httpcore.AsyncNetworkBackend):
    """Resolves and vets the host at connect time, then connects to the vetted IP itself."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = AsyncioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.resolve_vetted(host, port)
        failure: Exception | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        raise SourceUnreachable(f"cannot connect to {host}:{port}: {failure}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CoreStream(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._response.stream
        assert isinstance(stream, AsyncIterable)
        async for part in stream:
            yield part

    async def aclose(self) -> None:
        await self._response.aclose()


@functools.cache
def _verified_context() -> ssl.SSLContext:
    """Loading the CA bundle takes milliseconds: do it once per process, not per download."""
    return httpx.create_ssl_context()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that only ever connects to addresses `policy` permits.

    Use it for any outbound call to a user-supplied URL. It raises
    httpcore errors and BlockedAddress as they are; `fetch_image` maps them to ImageErrors.
    """

    def __init__(self, policy: AddressPolicy, *, verify: ssl.SSLContext | bool = True) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_verified_context() if verify is True else httpx.create_ssl_context(verify),
            network_backend=_VettingBackend(policy),
            max_connections=10,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_CoreStream(response),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class ImageFetcher:
    """Guarded downloads through one httpx client, so connections to an origin are kept
    alive from one job to the next: no new TCP (or TLS) handshake per image.

    A worker process makes one, on its event loop, and closes it at shutdown. A kept-alive
    connection goes only to the host it was opened (and vetted) for; redirects to another
    host open their own, vetted again.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        max_bytes: int,
        timeout: float,  # seconds for a whole download, redirects included
        max_redirects: int,
    ) -> None:
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._max_redirects = max_redirects
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy),
            trust_env=False,  # env proxies would route around the guarded transport
            follow_redirects=False,
            timeout=timeout,
            headers=_HEADERS,
            # One client serves every user's downloads: a cookie one origin set for one
            # user must never travel with another's request. This jar accepts none.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )

    async def fetch(self, url: str) -> Fetched:
        """Download `url` within the time budget in total and the byte cap of body.

        Raises BlockedAddress, FetchTimeout, SourceUnreachable, SourceClientError (4xx, too
        many redirects), SourceServerError (5xx, 429) or ImageTooLarge.
        """
        current = parse_fetchable_url(url)
        client = self._client
        try:
            async with asyncio.timeout(self._timeout):
                with _translate_transport_errors():
                    for _hop in range(self._max_redirects + 1):
                        async with client.stream("GET", current) as response:
                            location = response.headers.get("location")
                            if response.status_code in _REDIRECTS and location:
                                current = parse_fetchable_url(response.url.join(location))
                                continue
                            _check_status(response)
                            data = await _read_body(response, self._max_bytes)
                            content_type = response.headers.get("content-type")
                            return Fetched(data, str(response.url), content_type)
        except TimeoutError as exc:
            raise FetchTimeout(f"the download took more than {self._timeout:g} s") from exc
        raise SourceClientError(f"more than {self._max_redirects} redirects")

    async def aclose(self) -> None:
        await self._client.aclose()


async def fetch_image(
    url: str,
    policy: AddressPolicy,
    *,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 (a total budget, enforced with asyncio.timeout inside)
    max_redirects: int,
) -> Fetched:
    """One download with a client of its own (see `ImageFetcher` for the errors)."""
    fetcher = ImageFetcher(
        policy, max_bytes=max_bytes, timeout=timeout, max_redirects=max_redirects
    )
    try:
        return await fetcher.fetch(url)
    finally:
        await fetcher.aclose()


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise SourceServerError(f"the source answered HTTP {status}")
    if not 200 <= status < 300:
        raise SourceClientError(f"the source answered HTTP {status}")


async def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ImageTooLarge(f"the source declares {int(declared):,} bytes; limit {max_bytes:,}")
    # Raw bytes: httpx would decode a Content-Encoding before the cap could count them.
    encoding = response.headers.get("content-encoding")
    return await read_capped(response.aiter_raw(), encoding, max_bytes)


@contextmanager
def _translate_transport_errors() -> Iterator[None]:
    """Map httpcore/httpx failures to the contract's errors (timeouts, unreachable)."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise FetchTimeout(f"the source was too slow: {type(exc).__name__}") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpx.HTTPError) as exc:
        raise SourceUnreachable(f"the source could not be reached: {exc!r}") from exc

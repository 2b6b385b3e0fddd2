"""An httpx transport that only ever connects to addresses an `AddressPolicy` permits: the
guard of webhook deliveries (`webhooks.py`). Image downloads have their own, on aiohttp
(`fetch.py`).

DNS pinning: httpx hands the hostname to our httpcore network backend, which resolves it once,
vets every address and connects to a vetted IP. TLS SNI, certificate checks and the Host header
still use the hostname, so there is no window between the check and the connect to rebind in.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import httpcore
import httpx

from stockroom.domain.errors import BlockedAddress, SourceUnreachable
from stockroom.pipeline.address_policy import AddressPolicy
from stockroom.pipeline.asyncio_network import AsyncioBackend

__all__ = ["GuardedTransport", "verified_context"]


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
def verified_context() -> ssl.SSLContext:
    """Loading the CA bundle takes milliseconds: do it once per process, not per download."""
    return httpx.create_ssl_context()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that only ever connects to addresses `policy` permits.

    Use it for any outbound call to a user-supplied URL. It raises
    httpcore errors and BlockedAddress as they are; the caller maps them.
    """

    def __init__(self, policy: AddressPolicy, *, verify: ssl.SSLContext | bool = True) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verified_context() if verify is True else httpx.create_ssl_context(verify),
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

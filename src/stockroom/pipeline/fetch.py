"""Guarded download of source images: public addresses only, pinned at connect, size and time
capped, redirects followed by hand so that every hop is checked.

The client is aiohttp's, for its CPU: a download on a new connection cost about half of
what the same download cost through httpx (docs/performance.md). Its session and the URL
of every hop come from `guarded_session.py`, as a webhook's do.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
import httpx
from yarl import URL

from stockroom.domain.errors import (
    BlockedAddress,
    FetchTimeout,
    ImageTooLarge,
    SourceClientError,
    SourceServerError,
    SourceUnreachable,
)
from stockroom.pipeline.address_policy import AddressPolicy, check_url
from stockroom.pipeline.capped_body import read_capped
from stockroom.pipeline.guarded_session import guarded_session, request_url

__all__ = ["AddressPolicy", "Fetched", "ImageFetcher", "check_url", "fetch_image"]

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


class ImageFetcher:
    """Guarded downloads through one aiohttp session, so connections to an origin are kept
    alive from one job to the next: no new TCP (or TLS) handshake per image.

    A worker process makes one and closes it at shutdown; the session itself is made on
    the first download, on the event loop that runs them. Connections are pooled per origin
    (scheme, host, port) and vetted when opened, so a kept one never carries a request for
    another host; redirects to another host open their own, vetted again.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        max_bytes: int,
        timeout: float,  # seconds for a whole download, redirects included
        max_redirects: int,
        verify: ssl.SSLContext | None = None,  # the CA bundle's context by default
    ) -> None:
        self._policy = policy
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._max_redirects = max_redirects
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(
                self._policy,
                headers=_HEADERS,
                verify=self._verify,
                auto_decompress=False,  # read_capped decodes, counting against the cap
            )
        return self._session

    async def fetch(self, url: str) -> Fetched:
        """Download `url` within the time budget in total and the byte cap of body.

        Raises BlockedAddress, FetchTimeout, SourceUnreachable, SourceClientError (4xx, too
        many redirects), SourceServerError (5xx, 429) or ImageTooLarge.
        """
        current = request_url(url, self._policy)
        session = self._client()
        try:
            async with asyncio.timeout(self._timeout):
                with _translate_client_errors():
                    for _hop in range(self._max_redirects + 1):
                        async with session.get(current, allow_redirects=False) as response:
                            location = response.headers.get("Location")
                            if response.status in _REDIRECTS and location:
                                current = request_url(_join(current, location), self._policy)
                                continue
                            _check_status(response.status)
                            data = await _read_body(response, self._max_bytes)
                            content_type = response.headers.get("Content-Type")
                            return Fetched(data, str(response.url), content_type)
        except TimeoutError as exc:
            raise FetchTimeout(f"the download took more than {self._timeout:g} s") from exc
        raise SourceClientError(f"more than {self._max_redirects} redirects")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def fetch_image(
    url: str,
    policy: AddressPolicy,
    *,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 (a total budget, enforced with asyncio.timeout inside)
    max_redirects: int,
) -> Fetched:
    """One download with a session of its own (see `ImageFetcher` for the errors)."""
    fetcher = ImageFetcher(
        policy, max_bytes=max_bytes, timeout=timeout, max_redirects=max_redirects
    )
    try:
        return await fetcher.fetch(url)
    finally:
        await fetcher.aclose()


def _join(base: URL, location: str) -> httpx.URL:
    """`location` resolved against the URL that answered with it, as httpx joins them."""
    try:
        return httpx.URL(str(base)).join(location)
    except (httpx.InvalidURL, TypeError) as exc:
        raise BlockedAddress(f"not a valid redirect location: {exc}") from exc


def _check_status(status: int) -> None:
    if status == 429 or status >= 500:
        raise SourceServerError(f"the source answered HTTP {status}")
    if not 200 <= status < 300:
        raise SourceClientError(f"the source answered HTTP {status}")


async def _read_body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ImageTooLarge(f"the source declares {int(declared):,} bytes; limit {max_bytes:,}")
    # The bytes as on the wire (auto_decompress is off): the cap counts them, then decodes.
    encoding = response.headers.get("Content-Encoding")
    return await read_capped(response.content.iter_any(), encoding, max_bytes)


@contextmanager
def _translate_client_errors() -> Iterator[None]:
    """Map aiohttp's failures to the contract's errors (timeouts, unreachable)."""
    try:
        yield
    except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
        raise FetchTimeout(f"the source was too slow: {type(exc).__name__}") from exc
    except aiohttp.ClientError as exc:
        raise SourceUnreachable(f"the source could not be reached: {exc!r}") from exc

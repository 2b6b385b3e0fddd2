"""Sending one signed webhook attempt to a user's callback URL (Standard Webhooks).

Callbacks go through the same guarded session as image downloads (`guarded_session.py`):
public addresses only, vetted on the address actually connected to. Redirects are never
followed (a 3xx is a failed attempt); each attempt has one total time budget, and the
answer's body is read up to a small cap and dropped. `send` turns every network or HTTP
failure into a `DeliveryResult` whose error is a fixed phrase: no address, URL or exception
text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import aiohttp
from standardwebhooks import Webhook

from stockroom.domain.errors import BlockedAddress, SourceUnreachable
from stockroom.domain.webhooks import (
    DeliveryOutcome,
    DeliveryResult,
    callback_url_problem,
    outcome_for_status,
    signing_secret_problem,
)
from stockroom.pipeline.address_policy import (
    AddressPolicy,
    IPAddress,
    Resolver,
    parse_fetchable_url,
)
from stockroom.pipeline.guarded_session import guarded_session, request_url

__all__ = ["USER_AGENT", "WebhookSender"]

USER_AGENT = "Stockroom-Webhooks/1"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
_WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,256}")  # visible ASCII: it travels in a header
_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": USER_AGENT,
    "Accept-Encoding": "identity",  # the answer is dropped: no decoding work
}


class _HostNotFound(SourceUnreachable):
    """The callback's host did not resolve (told apart from a failed connect)."""


class WebhookSender:
    """Signs and POSTs webhooks through one aiohttp session, so connections to a receiver
    are kept alive between deliveries. A worker makes one and closes it; the session itself
    is made on the first delivery, on the event loop that runs them."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        secret: str,  # whsec_<base64>
        timeout: float = DEFAULT_TIMEOUT_SECONDS,  # seconds for a whole attempt
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.time,
        verify: ssl.SSLContext | None = None,  # the CA bundle's context by default
    ) -> None:
        problem = signing_secret_problem(secret)
        if problem:
            raise ValueError(f"the webhook signing secret {problem}")
        if timeout <= 0 or max_response_bytes < 0:
            raise ValueError("timeout must be positive and max_response_bytes not negative")
        self._signer = Webhook(secret)
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        self._policy = dataclasses.replace(policy, resolve=_telling_unresolved(policy.resolve))
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(self._policy, headers=_HEADERS, verify=self._verify)
        return self._session

    async def send(self, url: str, webhook_id: str, payload: bytes) -> DeliveryResult:
        """POST `payload` (built once by `build_payload`) to `url`, signed for this attempt.

        `webhook_id` is the same on every attempt of one event; the timestamp is now's.
        Network and HTTP problems come back as the result, never raised; ValueError for a
        `webhook_id` that cannot be a header or a payload that is not UTF-8.
        """
        if not _WEBHOOK_ID.fullmatch(webhook_id):
            raise ValueError("webhook_id must be 1 to 256 visible ASCII characters")
        headers = self._signed_headers(webhook_id, payload)
        started = time.perf_counter()

        def result(
            outcome: DeliveryOutcome, error: str | None, status: int | None = None
        ) -> DeliveryResult:
            return DeliveryResult(status, error, outcome, (time.perf_counter() - started) * 1000)

        problem = callback_url_problem(url)
        if problem:
            return result("refused", f"URL not allowed: {problem}")
        try:
            target = parse_fetchable_url(url)
        except BlockedAddress:
            return result("refused", "URL not allowed")

        status: int | None = None
        failure = "request failed"
        try:
            async with asyncio.timeout(self._timeout):
                aimed = request_url(target, self._policy)  # an IP literal is vetted here
                async with self._client().post(
                    aimed, data=payload, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    await self._drop_body(response)
        except BlockedAddress:
            return result("refused", "address not allowed")
        except TimeoutError:  # the budget's, and aiohttp's own timeouts
            failure = f"timed out after {self._timeout:g} s"
        except (SourceUnreachable, aiohttp.ClientError) as exc:
            failure = _network_phrase(exc)
        if status is None:
            return result("retry", failure)
        # The status line is the receiver's answer: a body cut short afterwards changes nothing.
        outcome, error = outcome_for_status(status)
        return result(outcome, error, status)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _signed_headers(self, webhook_id: str, payload: bytes) -> dict[str, str]:
        seconds = int(self._clock())
        signed_at = datetime.fromtimestamp(seconds, UTC)
        signature = self._signer.sign(webhook_id, signed_at, payload.decode("utf-8"))
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(seconds),
            "webhook-signature": signature,
        }

    async def _drop_body(self, response: aiohttp.ClientResponse) -> None:
        """Read up to the cap (a small answer read whole keeps the connection reusable),
        then stop: a huge or endless answer is never buffered, and leaving it unread closes
        its connection."""
        read = 0
        async for chunk in response.content.iter_any():
            read += len(chunk)
            if read > self._max_response_bytes:
                return


def _telling_unresolved(resolve: Resolver) -> Resolver:
    """The policy's resolver, with a failure to resolve marked as such."""

    async def resolved(host: str, port: int) -> Sequence[IPAddress]:
        try:
            addresses = await resolve(host, port)
        except SourceUnreachable as exc:
            raise _HostNotFound("the host did not resolve") from exc
        if not addresses:
            raise _HostNotFound("the host has no address")
        return addresses

    return resolved


def _network_phrase(exc: BaseException) -> str:
    """A fixed phrase for a failure to talk to the receiver; details stay out (they may name
    internal addresses)."""
    if isinstance(exc, _HostNotFound):
        return "host not found"
    causes = _chain(exc)
    if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes):
        return "TLS certificate not accepted"
    if any(isinstance(cause, ssl.SSLError) for cause in causes):
        return "TLS handshake failed"
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused"
    if isinstance(exc, SourceUnreachable | aiohttp.ClientConnectorError):
        return "could not connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        return "no valid HTTP response"  # closed before, or instead of, a status line
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return "connection lost"
    return "request failed"


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found

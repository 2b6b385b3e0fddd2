"""The webhook sender against a real receiver on 127.0.0.1 that verifies signatures with the
Standard Webhooks library, as any receiver would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime

import orjson
import pytest
import trustme
from tests.support.webhook_receiver import Received, WebhookReceiver, receive_webhooks

from stockroom.domain.errors import SourceUnreachable
from stockroom.domain.webhooks import DeliveryResult, build_payload
from stockroom.pipeline.address_policy import AddressPolicy, IPAddress
from stockroom.pipeline.webhooks import USER_AGENT, WebhookSender

KEY = b"stockroom-webhook-test-key-32-by"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
LOCAL = AddressPolicy(allow_private=True)  # the receiver is on loopback
PAYLOAD = build_payload(
    "job.succeeded",
    {"job_id": "2f1c", "product_id": 7, "status": "succeeded"},
    datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with receive_webhooks(SECRET) as running:
        yield running


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    running = WebhookSender(LOCAL, secret=SECRET, timeout=5.0)
    yield running
    await running.aclose()


def new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def seen(receiver: WebhookReceiver, webhook_id: str) -> list[Received]:
    return [r for r in receiver.requests if r.headers.get("webhook-id") == webhook_id]


def assert_safe(result: DeliveryResult) -> None:
    """The error can be shown to the endpoint's owner: no address, no exception text."""
    if result.error is not None:
        assert len(result.error) <= 80
        for leak in ("127.0.0.1", "Errno", "Error(", "whsec_", "Traceback"):
            assert leak not in result.error
    assert result.duration_ms >= 0


async def send(sender: WebhookSender, url: str, webhook_id: str | None = None) -> DeliveryResult:
    result = await sender.send(url, webhook_id or new_id(), PAYLOAD)
    assert_safe(result)
    return result


# -- answers -----------------------------------------------------------------------------
async def test_a_2xx_is_delivered_and_verifies_as_a_standard_webhook(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_id = new_id()
    result = await send(sender, receiver.url("ok"), webhook_id)

    assert (result.outcome, result.status_code, result.error) == ("delivered", 200, None)
    [request] = seen(receiver, webhook_id)
    assert request.verify_error is None
    assert request.payload == orjson.loads(PAYLOAD)
    assert request.body == PAYLOAD  # the bytes built once, sent as they are
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert "cookie" not in request.headers


async def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    """Checked without the library too: exactly what the contract spells out."""
    webhook_id = new_id()
    await send(sender, receiver.url("ok"), webhook_id)
    [request] = seen(receiver, webhook_id)
    timestamp = request.headers["webhook-timestamp"]
    signed = f"{webhook_id}.{timestamp}.".encode() + PAYLOAD
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert abs(int(timestamp) - time.time()) < 5


async def test_a_server_error_is_retried(receiver: WebhookReceiver, sender: WebhookSender) -> None:
    result = await send(sender, receiver.url("status/500"))
    assert (result.outcome, result.status_code, result.error) == ("retry", 500, "answered 500")
    assert not result.final


async def test_a_client_error_other_than_410_is_retried(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    result = await send(sender, receiver.url("status/404"))
    assert (result.outcome, result.status_code) == ("retry", 404)


async def test_410_means_gone_and_stops(receiver: WebhookReceiver, sender: WebhookSender) -> None:
    result = await send(sender, receiver.url("status/410"))
    assert (result.outcome, result.status_code) == ("gone", 410)
    assert result.final


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_id = new_id()
    result = await send(sender, receiver.url("redirect"), webhook_id)

    assert (result.outcome, result.status_code) == ("retry", 302)
    assert result.error is not None
    assert "redirect" in result.error
    assert [r.path for r in seen(receiver, webhook_id)] == ["/redirect"]  # never /ok


async def test_the_same_webhook_id_verifies_at_two_timestamps(
    receiver: WebhookReceiver,
) -> None:
    """A retry carries the event's id again, signed for its own moment."""
    moments = iter([time.time() - 120, time.time()])
    retrying = WebhookSender(LOCAL, secret=SECRET, timeout=5.0, clock=lambda: next(moments))
    webhook_id = new_id()
    try:
        first = await retrying.send(receiver.url("status/503"), webhook_id, PAYLOAD)
        second = await retrying.send(receiver.url("ok"), webhook_id, PAYLOAD)
    finally:
        await retrying.aclose()

    assert (first.outcome, second.outcome) == ("retry", "delivered")
    attempts = seen(receiver, webhook_id)
    assert len(attempts) == 2
    assert all(a.verify_error is None for a in attempts)
    assert attempts[0].headers["webhook-id"] == attempts[1].headers["webhook-id"]
    stamps = [int(a.headers["webhook-timestamp"]) for a in attempts]
    assert stamps[1] - stamps[0] in (119, 120, 121)
    assert attempts[0].headers["webhook-signature"] != attempts[1].headers["webhook-signature"]
    assert attempts[0].body == attempts[1].body == PAYLOAD


async def test_a_signature_with_another_secret_is_rejected_by_the_receiver(
    receiver: WebhookReceiver,
) -> None:
    """The receiver really verifies: a sender with another key gets its 400."""
    other = WebhookSender(LOCAL, secret="whsec_" + base64.b64encode(bytes(32)).decode())
    try:
        result = await other.send(receiver.url("ok"), new_id(), PAYLOAD)
    finally:
        await other.aclose()
    assert (result.outcome, result.status_code) == ("retry", 400)


async def test_no_cookie_travels_from_one_delivery_to_the_next(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    assert (await send(sender, receiver.url("set-cookie"))).outcome == "delivered"
    webhook_id = new_id()
    await send(sender, receiver.url("ok"), webhook_id)
    [request] = seen(receiver, webhook_id)
    assert "cookie" not in request.headers


# -- time and size -----------------------------------------------------------------------
async def test_a_receiver_that_hangs_is_cut_at_the_timeout(receiver: WebhookReceiver) -> None:
    quick = WebhookSender(LOCAL, secret=SECRET, timeout=0.5)
    started = time.monotonic()
    try:
        result = await quick.send(receiver.url("hang/5"), new_id(), PAYLOAD)
    finally:
        await quick.aclose()

    assert (result.outcome, result.status_code) == ("retry", None)
    assert result.error == "timed out after 0.5 s"
    assert time.monotonic() - started < 1.5
    assert 450 <= result.duration_ms < 1500


async def test_headers_that_trickle_are_cut_at_the_total_timeout(
    receiver: WebhookReceiver,
) -> None:
    """Every read is quick (a byte per 0.1 s): only the attempt's total budget ends it."""
    quick = WebhookSender(LOCAL, secret=SECRET, timeout=0.5)
    started = time.monotonic()
    try:
        result = await quick.send(receiver.url("trickle"), new_id(), PAYLOAD)
    finally:
        await quick.aclose()
    assert (result.outcome, result.error) == ("retry", "timed out after 0.5 s")
    assert time.monotonic() - started < 1.5


async def test_a_2xx_whose_body_is_slow_counts_as_delivered(receiver: WebhookReceiver) -> None:
    """The status line is the receiver's answer; the budget still ends the body's read."""
    quick = WebhookSender(LOCAL, secret=SECRET, timeout=0.5)
    started = time.monotonic()
    try:
        result = await quick.send(receiver.url("drip/3"), new_id(), PAYLOAD)
    finally:
        await quick.aclose()
    assert (result.outcome, result.status_code, result.error) == ("delivered", 200, None)
    assert time.monotonic() - started < 1.5


async def test_an_endless_answer_is_not_buffered(receiver: WebhookReceiver) -> None:
    """Reading it all could only end at the timeout; the sender stops at its cap and hangs up."""
    sender = WebhookSender(LOCAL, secret=SECRET, timeout=5.0, max_response_bytes=64 * 1024)
    started = time.monotonic()
    try:
        result = await sender.send(receiver.url("endless"), new_id(), PAYLOAD)
    finally:
        await sender.aclose()

    assert (result.outcome, result.status_code) == ("delivered", 200)
    assert time.monotonic() - started < 2.0
    assert receiver.endless_abandoned.wait(timeout=5)


# -- refused addresses and URLs ----------------------------------------------------------
async def test_a_private_address_is_refused_by_the_default_policy(
    receiver: WebhookReceiver,
) -> None:
    strict = WebhookSender(AddressPolicy(), secret=SECRET)
    webhook_id = new_id()
    try:
        result = await strict.send(receiver.url("ok"), webhook_id, PAYLOAD)
    finally:
        await strict.aclose()

    assert_safe(result)
    assert (result.outcome, result.status_code, result.error) == (
        "refused",
        None,
        "address not allowed",
    )
    assert result.final
    assert seen(receiver, webhook_id) == []


def resolving(answers: dict[str, str], *, also_allow: str | None = None) -> AddressPolicy:
    """A policy whose resolver answers from `answers` ("" for a name with no address)."""

    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        if host not in answers:
            raise SourceUnreachable(f"cannot resolve {host!r}")
        return [ipaddress.ip_address(answers[host])] if answers[host] else []

    allowed = [ipaddress.ip_network(also_allow)] if also_allow else []
    return AddressPolicy(also_allow=allowed, resolve=resolve)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1"])
async def test_a_name_resolving_to_a_private_address_is_refused(address: str) -> None:
    strict = WebhookSender(resolving({"hooks.example": address}), secret=SECRET)
    try:
        result = await strict.send("http://hooks.example/hook", new_id(), PAYLOAD)
    finally:
        await strict.aclose()
    assert_safe(result)
    assert (result.outcome, result.error) == ("refused", "address not allowed")
    assert address not in (result.error or "")


async def test_a_name_resolving_to_an_allowed_address_is_delivered_to_it(
    receiver: WebhookReceiver,
) -> None:
    policy = resolving({"hooks.example": "127.0.0.1"}, also_allow="127.0.0.1/32")
    named = WebhookSender(policy, secret=SECRET)
    webhook_id = new_id()
    try:
        result = await named.send(f"http://hooks.example:{receiver.port}/ok", webhook_id, PAYLOAD)
    finally:
        await named.aclose()
    assert result.outcome == "delivered"
    [request] = seen(receiver, webhook_id)
    assert request.headers["host"] == f"hooks.example:{receiver.port}"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/hook",
        "file:///etc/passwd",
        "http://user:secret@hooks.example.com/hook",
        "hooks.example.com/hook",
        "http:///no-host",
        "http://exa\u200bmple.com/hook",  # well formed to urlsplit, not a valid IDNA name
    ],
)
async def test_a_url_that_is_not_allowed_is_refused_without_a_request(
    sender: WebhookSender, url: str
) -> None:
    result = await send(sender, url)
    assert result.outcome == "refused"
    assert result.error is not None
    assert result.error.startswith("URL not allowed")
    assert "secret" not in result.error


# -- network failures --------------------------------------------------------------------
async def test_connection_refused_is_retried(sender: WebhookSender) -> None:
    with receive_webhooks(SECRET) as stopped:
        url = stopped.url("ok")
    result = await send(sender, url)
    assert (result.outcome, result.status_code, result.error) == (
        "retry",
        None,
        "connection refused",
    )


async def test_a_receiver_that_hangs_up_without_answering_is_retried(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    result = await send(sender, receiver.url("close"))
    assert (result.outcome, result.status_code, result.error) == (
        "retry",
        None,
        "no valid HTTP response",
    )


async def test_a_reset_connection_is_retried(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    result = await send(sender, receiver.url("reset"))
    assert (result.outcome, result.status_code) == ("retry", None)
    assert result.error in ("connection lost", "no valid HTTP response")


@pytest.mark.parametrize("answers", [{}, {"gone.example": ""}])
async def test_a_host_that_does_not_resolve_is_retried(answers: dict[str, str]) -> None:
    unresolved = WebhookSender(resolving(answers), secret=SECRET)
    try:
        result = await unresolved.send("https://gone.example/hook", new_id(), PAYLOAD)
    finally:
        await unresolved.aclose()
    assert (result.outcome, result.error) == ("retry", "host not found")


async def test_https_to_a_plain_http_receiver_is_a_failed_handshake(
    receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    result = await send(sender, f"https://127.0.0.1:{receiver.port}/ok")
    assert (result.outcome, result.error) == ("retry", "TLS handshake failed")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_receiver(ca: trustme.CA) -> Iterator[WebhookReceiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example").configure_cert(context)
    with receive_webhooks(SECRET, tls=context) as running:
        yield running


async def test_https_to_a_trusted_certificate_is_delivered(
    tls_receiver: WebhookReceiver, ca: trustme.CA
) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    policy = resolving({"hooks.example": "127.0.0.1"}, also_allow="127.0.0.1/32")
    secure = WebhookSender(policy, secret=SECRET, verify=trusting)
    try:
        url = f"https://hooks.example:{tls_receiver.port}/ok"
        result = await secure.send(url, new_id(), PAYLOAD)
    finally:
        await secure.aclose()
    assert (result.outcome, result.status_code) == ("delivered", 200)


async def test_https_with_an_unknown_authority_is_retried_with_a_plain_reason(
    tls_receiver: WebhookReceiver,
) -> None:
    policy = resolving({"hooks.example": "127.0.0.1"}, also_allow="127.0.0.1/32")
    secure = WebhookSender(policy, secret=SECRET)
    try:
        result = await secure.send(
            f"https://hooks.example:{tls_receiver.port}/ok", new_id(), PAYLOAD
        )
    finally:
        await secure.aclose()
    assert_safe(result)
    assert (result.outcome, result.error) == ("retry", "TLS certificate not accepted")


# -- misuse is a programming error, raised ------------------------------------------------
@pytest.mark.parametrize(
    "secret", ["", "changeme", "whsec_changeme", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_an_unusable_secret_is_refused_at_construction(secret: str) -> None:
    with pytest.raises(ValueError, match="signing secret") as caught:
        WebhookSender(LOCAL, secret=secret)
    if secret:
        assert secret.removeprefix("whsec_") not in str(caught.value)


@pytest.mark.parametrize(("timeout", "max_response_bytes"), [(0.0, 1024), (-1.0, 1024), (1.0, -1)])
def test_a_budget_that_cannot_work_is_refused_at_construction(
    timeout: float, max_response_bytes: int
) -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        WebhookSender(LOCAL, secret=SECRET, timeout=timeout, max_response_bytes=max_response_bytes)


@pytest.mark.parametrize("webhook_id", ["", "msg 1", "msg\r\nx-evil: 1", "é", "m" * 257])
async def test_a_webhook_id_that_cannot_be_a_header_is_refused(
    sender: WebhookSender, webhook_id: str
) -> None:
    with pytest.raises(ValueError, match="webhook_id"):
        await sender.send("http://127.0.0.1:9/hook", webhook_id, PAYLOAD)

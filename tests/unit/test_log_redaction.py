"""The redaction processor: secrets masked by key and by shape, at any depth, and
everything else left as it was (the very same objects when nothing changed)."""

from __future__ import annotations

import pytest

from stockroom.log_redaction import REDACTED, Redactor

TOKEN = "sr_" + "Zq0-V4kN_x8Jm2Rt7Wb5Yc1Hd9Lf3Gp6Se0Ua4Ko8Iw"  # fixed: it names test ids
WEBHOOK_SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5"
ODD_SECRET = "plain-words-as-a-secret"


@pytest.fixture
def redact() -> Redactor:
    return Redactor([WEBHOOK_SECRET, ODD_SECRET])


def test_values_under_secret_keys_are_masked_whatever_their_case(redact: Redactor) -> None:
    event = {
        "event": "login",
        "Authorization": "Basic dXNlcjpwYXNz",
        "proxy-authorization": "Basic x",
        "cookie": "session=abc",
        "Set-Cookie": "session=abc; HttpOnly",
        "token": 12345,
        "access_token": "opaque",
        "password": "hunter2",
        "api_key": "k",
        "X-API-Key": "k",
        "webhook_secret": "anything",
        "token_id": 7,
        "token_hash": "ab12",
        "user_id": None,
        "next_token": None,
    }

    out = redact(None, "info", dict(event))

    masked = {k for k, v in out.items() if v == REDACTED}
    assert masked == {
        "Authorization",
        "proxy-authorization",
        "cookie",
        "Set-Cookie",
        "token",
        "access_token",
        "password",
        "api_key",
        "X-API-Key",
        "webhook_secret",
    }
    assert (out["token_id"], out["token_hash"], out["user_id"]) == (7, "ab12", None)
    assert out["next_token"] is None  # nothing to hide


def test_asgi_header_lists_are_masked_without_touching_the_scope(redact: Redactor) -> None:
    headers = [
        (b"host", b"testserver"),
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"Cookie", f"session={TOKEN}".encode()),
        (b"x-request-id", b"req-1"),
    ]
    scope = {"type": "http", "headers": headers, "state": {"user_id": 1}}

    out = redact(None, "error", {"event": "boom", "scope": scope})

    assert out["scope"]["headers"] == [
        (b"host", b"testserver"),
        (b"authorization", REDACTED),
        (b"Cookie", REDACTED),
        (b"x-request-id", b"req-1"),
    ]
    assert out["scope"]["state"] is scope["state"]  # unchanged parts are shared
    assert headers[1][1] == f"Bearer {TOKEN}".encode()  # the request's own scope is intact


def test_nested_structures_are_masked_at_any_depth(redact: Redactor) -> None:
    event = {
        "event": "webhook.sent",
        "attempts": [{"request": {"headers": {"Authorization": "x"}, "body": f"t={TOKEN}"}}],
        "pair": ("token", "opaque"),
        "triple": ("a", TOKEN, 3),
    }

    out = redact(None, "info", event)

    [attempt] = out["attempts"]
    assert attempt["request"]["headers"] == {"Authorization": REDACTED}
    assert attempt["request"]["body"] == f"t=sr_{REDACTED}"
    assert out["pair"] == ("token", REDACTED)
    assert out["triple"] == ("a", f"sr_{REDACTED}", 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"caller sent {TOKEN}", f"caller sent sr_{REDACTED}"),
        (f"Authorization: Bearer {TOKEN}", f"Authorization: {REDACTED}"),
        ("with bearer abc.def-ghi~jkl+/== done", f"with bearer {REDACTED} done"),
        (f"signing with {WEBHOOK_SECRET}!", f"signing with {REDACTED}!"),  # the exact value
        ("whsec_AnotherOne+/= was rotated", f"whsec_{REDACTED} was rotated"),
        (f"key {ODD_SECRET} in use", f"key {REDACTED} in use"),
        ("(b'cookie', b'session=abc; theme=dark')", f"(b'cookie', b'{REDACTED}')"),
        ("{'authorization': 'Basic dXNlcg=='}", f"{{'authorization': '{REDACTED}'}}"),
        ("postgresql://app:s3cret@db:5432/x", f"postgresql://app:{REDACTED}@db:5432/x"),
    ],
)
def test_secrets_in_any_string_are_masked_by_shape(
    redact: Redactor, text: str, expected: str
) -> None:
    assert redact(None, "info", {"event": text})["event"] == expected
    assert redact.value(text.encode()) == expected.encode()


def test_a_formatted_traceback_is_masked(redact: Redactor) -> None:
    exception = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in handler\n'
        f"    check({TOKEN!r})\n"
        f"ValueError: bad token {TOKEN}"
    )

    out = redact(None, "error", {"event": "http.unhandled_error", "exception": exception})

    assert TOKEN not in out["exception"]
    assert "ValueError: bad token sr_[redacted]" in out["exception"]


def test_plain_events_come_back_as_they_were(redact: Redactor) -> None:
    event = {
        "event": "http.request",
        "method": "GET",
        "route": "/products/{product_id}",
        "path": "/products/12",
        "status": 200,
        "duration_ms": 1.5,
        "user_id": 3,
        "request_id": "req-1",
        "tags": ("a", "b"),
    }
    tags = event["tags"]

    out = redact(None, "info", dict(event))

    assert out == event
    assert out["tags"] is tags
    assert redact.value("sr_short") == "sr_short"  # too short to be one of our tokens


def test_short_configured_secrets_are_not_masked_everywhere() -> None:
    redact = Redactor(["", "abc"])

    assert redact(None, "info", {"event": "abc is fine"})["event"] == "abc is fine"


def test_the_rendered_line_is_masked_too(redact: Redactor) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return f"<Opaque holding {TOKEN}>"

    render = redact.rendered(lambda _logger, _name, event: repr(event).encode())
    render_text = redact.rendered(lambda _logger, _name, event: repr(event))

    assert TOKEN.encode() not in render(None, "info", {"thing": Opaque()})
    assert TOKEN not in render_text(None, "info", {"thing": Opaque()})

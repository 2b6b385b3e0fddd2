"""Webhooks as the contract defines them (Standard Webhooks): the payload, when to try again,
and what one delivery attempt came to. Pure: the sending is `pipeline/webhooks.py`.

Retries use "equal jitter": a delay drawn from [d/2, d] for a nominal delay d. Full jitter
([0, d]) spreads load best, but may retry at once into a receiver that has just failed, and
cannot promise a span; with a floor of d/2 the default schedule keeps trying for more than
an hour whatever the draws (the contract's "at least an hour").
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal
from urllib.parse import urlsplit

import orjson

from stockroom.domain.rules import image_url_problem

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "WEBHOOK_TYPES",
    "DeliveryOutcome",
    "DeliveryResult",
    "WebhookType",
    "build_payload",
    "callback_url_problem",
    "outcome_for_status",
    "parse_retry_schedule",
    "retry_delay",
    "signing_secret_problem",
]

WebhookType = Literal["job.succeeded", "job.failed", "import.completed"]
WEBHOOK_TYPES: Final = frozenset({"job.succeeded", "job.failed", "import.completed"})

DeliveryOutcome = Literal["delivered", "retry", "gone", "refused"]

# Seconds before attempts 2..7: x3 each step, the first within a minute. With equal jitter a
# delivery is retried for 1 h 31 min at the least (the halves) and 3 h 2 min at the most.
DEFAULT_RETRY_SCHEDULE: Final[tuple[float, ...]] = (30.0, 90.0, 270.0, 810.0, 2430.0, 7290.0)
MAX_RETRIES: Final = 25
MAX_RETRY_DELAY_SECONDS: Final = 7 * 24 * 3600.0
_SECONDS_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
_SHARED_RNG = random.Random()

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a prefix, not a secret)
# The Standard Webhooks spec: secrets of 24 to 64 random bytes.
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """One attempt: `error` is a short fixed phrase, safe to show the endpoint's owner.

    delivered: a 2xx. gone: 410, stop. refused: the URL or its address is not allowed,
    stop. retry: anything else (another status, a redirect, a timeout, a network error).
    """

    status_code: int | None
    error: str | None
    outcome: DeliveryOutcome
    duration_ms: float

    @property
    def final(self) -> bool:
        """True when no further attempt should be scheduled for this delivery."""
        return self.outcome != "retry"


def build_payload(type: str, data: Mapping[str, object], at: datetime) -> bytes:
    """The body, serialized once: compact JSON `{"type", "timestamp", "data"}`, where
    `timestamp` is `at` (when the event happened) in RFC 3339 UTC with milliseconds.

    Raises ValueError for an unknown type or a naive `at`; TypeError for data that is not
    JSON (datetimes in it are fine: written as RFC 3339 UTC too).
    """
    if type not in WEBHOOK_TYPES:
        raise ValueError(f"unknown webhook type {type!r}; one of {sorted(WEBHOOK_TYPES)}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the event time must be timezone-aware")
    stamp = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"type": type, "timestamp": stamp, "data": data}
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


def retry_delay(
    attempt: int, schedule: Sequence[float], rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before attempt `attempt + 1` after attempt `attempt` (1 = the first
    delivery) failed, drawn from [d/2, d] (equal jitter); None when the schedule is spent.

    `rng` None draws from a process-wide generator; tests pass a seeded one.
    """
    if attempt < 1:
        raise ValueError(f"attempts are counted from 1, not {attempt}")
    if attempt > len(schedule):
        return None
    nominal = schedule[attempt - 1]
    half = nominal / 2
    return half + (rng or _SHARED_RNG).uniform(0.0, half)


def parse_retry_schedule(text: str) -> tuple[float, ...]:
    """`"30,90,270"` -> (30.0, 90.0, 270.0): positive plain decimals of seconds, comma
    separated; ValueError naming the first bad item otherwise."""
    if not text.strip():
        raise ValueError("the retry schedule is empty: give seconds like '30,90,270'")
    items = [item.strip() for item in text.split(",")]
    if len(items) > MAX_RETRIES:
        raise ValueError(f"the retry schedule has {len(items)} delays; at most {MAX_RETRIES}")
    delays: list[float] = []
    for position, item in enumerate(items, start=1):
        shown = item if len(item) <= 20 else item[:20] + "..."
        if not item:
            raise ValueError(f"retry delay {position} is empty (a stray comma?)")
        if not _SECONDS_TEXT.fullmatch(item):
            raise ValueError(
                f"retry delay {position} ({shown!r}) is not a number of seconds like 30 or 2.5"
            )
        seconds = float(item)
        if seconds <= 0:
            raise ValueError(f"retry delay {position} ({shown!r}) must be more than 0 seconds")
        if seconds > MAX_RETRY_DELAY_SECONDS:
            raise ValueError(
                f"retry delay {position} ({shown!r}) is more than "
                f"{MAX_RETRY_DELAY_SECONDS:.0f} seconds (7 days)"
            )
        delays.append(seconds)
    return tuple(delays)


def outcome_for_status(status_code: int) -> tuple[DeliveryOutcome, str | None]:
    """What the receiver's answer means: 2xx delivered, 410 gone, anything else a retry
    (a redirect too: like Stripe and GitHub, webhooks never follow one)."""
    if 200 <= status_code < 300:
        return "delivered", None
    if status_code == 410:
        return "gone", "answered 410 (gone: no more attempts)"
    if 300 <= status_code < 400:
        return "retry", f"answered {status_code} (a redirect, which webhooks do not follow)"
    return "retry", f"answered {status_code}"


def callback_url_problem(url: str) -> str | None:
    """Why `url` cannot be a callback (the image URL rules, and no credentials), or None.

    Only the form: whether its address is allowed is decided at each delivery, as DNS
    answers can change between submission and sending.
    """
    problem = image_url_problem(url)
    if problem:
        return problem
    if "@" in urlsplit(url).netloc:
        return "must not contain credentials"
    return None


def signing_secret_problem(secret: str) -> str | None:
    """Why `secret` is not a usable `whsec_<base64>` signing secret, or None.

    The signing library decodes leniently (it drops characters that are not base64), so a
    typo would silently become another key: checked strictly here.
    """
    if not secret.startswith(SECRET_PREFIX):
        return f"must start with {SECRET_PREFIX!r}"
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return f"must be {SECRET_PREFIX} followed by standard base64"
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return f"must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)}"
    return None

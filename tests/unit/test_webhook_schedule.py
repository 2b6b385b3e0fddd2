"""Webhook rules without a network: the retry schedule, the payload, what an answer means."""

from __future__ import annotations

import base64
import itertools
import random
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockroom.domain.rules import MAX_URL_LENGTH
from stockroom.domain.webhooks import (
    DEFAULT_RETRY_SCHEDULE,
    MAX_RETRIES,
    DeliveryResult,
    build_payload,
    callback_url_problem,
    outcome_for_status,
    parse_retry_schedule,
    retry_delay,
    signing_secret_problem,
)

HOUR = 3600.0


class _Lowest(random.Random):
    """Every jitter draw at its lowest."""

    def uniform(self, a: float, b: float) -> float:
        return a


class _Highest(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def delays(schedule: tuple[float, ...], rng: random.Random) -> list[float]:
    """Every wait of one delivery that never succeeds, until the schedule gives up."""
    found: list[float] = []
    attempt = 1
    while (delay := retry_delay(attempt, schedule, rng)) is not None:
        found.append(delay)
        attempt += 1
    return found


# -- the default schedule ----------------------------------------------------------------
def test_the_first_retry_comes_within_a_minute_even_at_the_highest_jitter() -> None:
    first = retry_delay(1, DEFAULT_RETRY_SCHEDULE, _Highest())
    assert first is not None
    assert first < 60


def test_the_default_schedule_grows_exponentially() -> None:
    ratios = [b / a for a, b in itertools.pairwise(DEFAULT_RETRY_SCHEDULE)]
    assert len(ratios) >= 4
    assert all(ratio == pytest.approx(ratios[0]) for ratio in ratios)  # one constant factor
    assert ratios[0] >= 2


def test_the_default_schedule_spans_over_an_hour_at_the_lowest_jitter() -> None:
    lowest = delays(DEFAULT_RETRY_SCHEDULE, _Lowest())
    assert len(lowest) == len(DEFAULT_RETRY_SCHEDULE)
    assert sum(lowest) >= HOUR
    assert lowest == [d / 2 for d in DEFAULT_RETRY_SCHEDULE]  # the floor is exactly half


def test_the_default_schedule_gives_up_within_a_few_hours_at_the_highest_jitter() -> None:
    highest = delays(DEFAULT_RETRY_SCHEDULE, _Highest())
    assert highest == list(DEFAULT_RETRY_SCHEDULE)
    assert sum(highest) <= 4 * HOUR


@pytest.mark.parametrize("seed", range(20))
def test_any_run_of_retries_spans_over_an_hour(seed: int) -> None:
    assert sum(delays(DEFAULT_RETRY_SCHEDULE, random.Random(seed))) >= HOUR


# -- jitter ------------------------------------------------------------------------------
def test_jitter_stays_between_half_and_all_of_the_nominal_delay() -> None:
    rng = random.Random(17)
    for attempt, nominal in enumerate(DEFAULT_RETRY_SCHEDULE, start=1):
        draws = [retry_delay(attempt, DEFAULT_RETRY_SCHEDULE, rng) for _ in range(500)]
        assert all(d is not None and nominal / 2 <= d <= nominal for d in draws)
        spread = [d for d in draws if d is not None]
        assert max(spread) - min(spread) > nominal * 0.4  # spread, not one fixed value


def test_a_seeded_generator_gives_the_same_delays() -> None:
    first = delays(DEFAULT_RETRY_SCHEDULE, random.Random(42))
    again = delays(DEFAULT_RETRY_SCHEDULE, random.Random(42))
    other = delays(DEFAULT_RETRY_SCHEDULE, random.Random(43))
    assert first == again
    assert first != other


def test_without_a_generator_the_shared_one_draws_within_bounds() -> None:
    for _ in range(100):
        delay = retry_delay(2, (10.0, 20.0))
        assert delay is not None
        assert 10.0 <= delay <= 20.0


def test_the_schedule_is_spent_after_its_last_delay() -> None:
    schedule = (1.0, 2.0)
    assert retry_delay(2, schedule, random.Random(0)) is not None
    assert retry_delay(3, schedule, random.Random(0)) is None
    assert retry_delay(1, (), random.Random(0)) is None


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_are_counted_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="counted from 1"):
        retry_delay(attempt, DEFAULT_RETRY_SCHEDULE, random.Random(0))


# -- the setting -------------------------------------------------------------------------
def test_a_schedule_setting_is_parsed_into_seconds() -> None:
    assert parse_retry_schedule("30,120,300,900,1800,3600") == (
        30.0,
        120.0,
        300.0,
        900.0,
        1800.0,
        3600.0,
    )
    assert parse_retry_schedule(" 0.5 , 2.25,7 ") == (0.5, 2.25, 7.0)


def test_the_default_schedule_written_as_a_setting_parses_back() -> None:
    text = ",".join(f"{seconds:g}" for seconds in DEFAULT_RETRY_SCHEDULE)
    assert parse_retry_schedule(text) == DEFAULT_RETRY_SCHEDULE


@given(st.lists(st.integers(min_value=1, max_value=86_400), min_size=1, max_size=MAX_RETRIES))
def test_any_list_of_positive_seconds_round_trips(seconds: list[int]) -> None:
    assert parse_retry_schedule(",".join(map(str, seconds))) == tuple(map(float, seconds))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("30,,60", "retry delay 2 is empty"),
        ("30,", "retry delay 2 is empty"),
        ("abc", r"retry delay 1 \('abc'\) is not a number"),
        ("30;60", "is not a number"),
        ("-5", "is not a number"),
        ("+5", "is not a number"),
        ("nan", "is not a number"),
        ("inf", "is not a number"),
        ("1e3", "is not a number"),
        ("1_000", "is not a number"),
        ("\u0663\u0660", "is not a number"),  # Arabic-Indic digits: float() would take them
        ("30 s", "is not a number"),
        ("0", r"retry delay 1 \('0'\) must be more than 0"),
        ("30,0.0", "retry delay 2 .* must be more than 0"),
        ("999999999", "more than 604800 seconds"),
        (",".join(["1"] * (MAX_RETRIES + 1)), f"at most {MAX_RETRIES}"),
        ("x" * 500, r"'x{20}\.\.\.'"),  # long garbage is cut in the message
    ],
)
def test_a_bad_schedule_setting_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_retry_schedule(text)


# -- the payload -------------------------------------------------------------------------
AT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_the_payload_is_compact_json_with_type_timestamp_and_data() -> None:
    body = build_payload("job.succeeded", {"job_id": "j1", "status": "succeeded"}, AT)
    assert body == (
        b'{"type":"job.succeeded","timestamp":"2024-05-01T12:00:00.123Z",'
        b'"data":{"job_id":"j1","status":"succeeded"}}'
    )


def test_the_timestamp_is_written_in_utc_whatever_the_zone() -> None:
    paris = AT.astimezone(timezone(timedelta(hours=2)))
    decoded = orjson.loads(build_payload("job.failed", {}, paris))
    assert decoded["timestamp"] == "2024-05-01T12:00:00.123Z"


def test_datetimes_in_the_data_are_written_as_utc() -> None:
    decoded = orjson.loads(build_payload("import.completed", {"finished_at": AT}, AT))
    assert decoded["data"] == {"finished_at": "2024-05-01T12:00:00.123456Z"}


@pytest.mark.parametrize("kind", ["job.succeeded", "job.failed", "import.completed"])
def test_every_contract_type_builds(kind: str) -> None:
    assert orjson.loads(build_payload(kind, {"n": 1}, AT))["type"] == kind


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown webhook type"):
        build_payload("job.started", {}, AT)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_payload("job.failed", {}, datetime(2024, 5, 1, 12, 0))


def test_data_that_is_not_json_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        build_payload("job.failed", {"price": object()}, AT)


# -- what an answer means ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "outcome", "error"),
    [
        (200, "delivered", None),
        (202, "delivered", None),
        (204, "delivered", None),
        (410, "gone", "answered 410 (gone: no more attempts)"),
        (301, "retry", "answered 301 (a redirect, which webhooks do not follow)"),
        (302, "retry", "answered 302 (a redirect, which webhooks do not follow)"),
        (308, "retry", "answered 308 (a redirect, which webhooks do not follow)"),
        (400, "retry", "answered 400"),
        (404, "retry", "answered 404"),
        (429, "retry", "answered 429"),
        (500, "retry", "answered 500"),
        (503, "retry", "answered 503"),
        (100, "retry", "answered 100"),
    ],
)
def test_a_status_maps_to_an_outcome(status: int, outcome: str, error: str | None) -> None:
    assert outcome_for_status(status) == (outcome, error)


@pytest.mark.parametrize(
    ("outcome", "final"),
    [("delivered", True), ("gone", True), ("refused", True), ("retry", False)],
)
def test_only_a_retry_leaves_the_delivery_open(outcome: str, final: bool) -> None:
    result = DeliveryResult(None, None, outcome, 1.0)  # type: ignore[arg-type]
    assert result.final is final


# -- callback URLs at submission ---------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/stockroom",
        "http://hooks.example.com:8080/a?b=c",
        "https://10.0.0.1/hook",  # the address is judged at delivery, not here
    ],
)
def test_a_well_formed_callback_url_is_accepted(url: str) -> None:
    assert callback_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example.com/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("/relative/path", "http or https"),
        ("https://", "http or https"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com:99999/", "valid"),
        ("https://user:secret@hooks.example.com/", "credentials"),
        ("https://@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/" + "a" * MAX_URL_LENGTH, "at most"),
    ],
)
def test_a_bad_callback_url_is_refused_at_submission(url: str, problem: str) -> None:
    found = callback_url_problem(url)
    assert found is not None
    assert problem in found


# -- the signing secret ------------------------------------------------------------------
KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize("secret", [f"whsec_{KEY}", f"whsec_{KEY.rstrip('=')}"])
def test_a_whsec_secret_of_enough_bytes_is_usable(secret: str) -> None:
    assert signing_secret_problem(secret) is None


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (KEY, "must start with 'whsec_'"),
        ("whsec_", "24 to 64 bytes, not 0"),
        ("whsec_" + base64.b64encode(b"short").decode(), "not 5"),
        ("whsec_" + KEY[:-4] + "$$$$", "standard base64"),  # the library would drop the $
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "not 65"),
    ],
)
def test_an_unusable_secret_is_named_without_echoing_it(secret: str, problem: str) -> None:
    found = signing_secret_problem(secret)
    assert found is not None
    assert problem in found
    assert KEY not in found

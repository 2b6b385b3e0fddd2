"""Field rules shared by every entrypoint: exact prices, clean text, http(s) URLs."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stockroom.domain import rules
from stockroom.domain.rules import image_url_problem, parse_price, price_problem, text_problem

CENTS = st.integers(min_value=0, max_value=9_999_999_999)
PRICES = CENTS.map(lambda cents: Decimal(cents).scaleb(-2))


# -- prices ------------------------------------------------------------------------------
@given(PRICES)
@example(Decimal("0.00"))
@example(Decimal("0.29"))
@example(Decimal("19.99"))
@example(rules.MAX_PRICE)
def test_every_two_place_price_round_trips_exactly(price: Decimal) -> None:
    for raw in (price, str(price), f" {price} ", float(price)):
        parsed = parse_price(raw)
        assert parsed == price
        assert parsed.as_tuple().exponent == -2  # stored and fingerprinted as cents


@given(PRICES)
def test_the_float_the_api_prints_reads_back_as_the_same_price(price: Decimal) -> None:
    # Responses carry float(price); JSON writers print its shortest repr.
    printed = repr(float(price))

    assert Decimal(printed) == price
    assert parse_price(printed) == price
    assert parse_price(float(printed)) == price


@given(st.integers(min_value=0, max_value=99_999_999))
def test_whole_numbers_are_prices(whole: int) -> None:
    assert parse_price(whole) == Decimal(whole)


@given(CENTS, st.integers(min_value=1, max_value=9))
def test_a_third_decimal_place_is_refused(cents: int, extra: int) -> None:
    price = Decimal(cents * 10 + extra).scaleb(-3)
    if price > rules.MAX_PRICE:
        return
    for raw in (price, str(price), float(price)):
        with pytest.raises(ValueError, match="at most 2 decimal places"):
            parse_price(raw)


def test_trailing_zeros_beyond_two_places_are_still_two_places() -> None:
    assert parse_price("1.230") == Decimal("1.23")


def test_float_noise_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="2 decimal places"):
        parse_price(0.1 + 0.2)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (True, "number or a decimal string"),
        (False, "number or a decimal string"),
        (None, "number or a decimal string"),
        ([1], "number or a decimal string"),
        ({"amount": 1}, "number or a decimal string"),
        ("", "number or a decimal string"),
        ("abc", "number or a decimal string"),
        ("1,5", "number or a decimal string"),
        ("\x005", "number or a decimal string"),
        ("NaN", "decimal string like 19.99"),
        ("+5", "decimal string like 19.99"),
        ("1_000", "decimal string like 19.99"),
        ("\u0663", "decimal string like 19.99"),  # an Arabic-Indic digit
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("-Infinity", "decimal string like 19.99"),
        (-1, "at least 0"),
        ("-0.01", "at least 0"),
        ("100000000", "at most"),
        (10**30, "at most"),
        ("1e400", "decimal string like 19.99"),
    ],
)
def test_non_prices_are_refused(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_price(raw)


@given(st.one_of(st.text(), st.floats(), st.integers(), st.decimals(), st.none(), st.booleans()))
def test_parse_price_raises_nothing_but_value_error(raw: object) -> None:
    try:
        price = parse_price(raw)
    except ValueError:
        return
    assert price_problem(price) is None


def test_negative_zero_is_normalised_to_zero() -> None:
    assert str(parse_price("-0")) == "0.00"


# -- text --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("nul\x00byte", "NUL"),
        ("\x00", "NUL"),
        ("lone \ud800 surrogate", "UTF-8"),
        ("\udfff", "UTF-8"),
    ],
)
def test_text_that_no_column_can_hold_is_refused(value: str, problem: str) -> None:
    found = text_problem(value)

    assert found is not None
    assert problem in found


@pytest.mark.parametrize("value", ["", "Desk lamp", "Äpfel & Birnen", "灯", "🪔 lamp", "e\u0301"])
def test_ordinary_unicode_text_is_fine(value: str) -> None:
    assert text_problem(value) is None


@given(st.text())
def test_text_problem_is_exactly_nul_or_unencodable(value: str) -> None:
    encodable = all(not 0xD800 <= ord(ch) <= 0xDFFF for ch in value)

    assert (text_problem(value) is None) == ("\x00" not in value and encodable)


# -- image URLs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://images.example.com/a.jpg",
        "http://example.com",
        "HTTPS://EXAMPLE.COM/A.JPG",
        "https://example.com:8443/a.jpg?size=large#top",
        "http://[2001:db8::1]/a.png",
        "https://example.com/" + "a" * (rules.MAX_URL_LENGTH - len("https://example.com/")),
    ],
)
def test_absolute_http_urls_are_accepted(url: str) -> None:
    assert image_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/a.jpg", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("/relative.jpg", "http or https"),
        ("//example.com/a.jpg", "http or https"),
        ("https://", "http or https"),
        ("https://:80/a.jpg", "http or https"),
        ("http://example.com:99999/a.jpg", "valid"),
        ("http://[::1/a.jpg", "valid"),
        ("https://exa mple.com/a.jpg", "whitespace"),
        ("https://example.com/a.jpg\n", "whitespace"),
        ("https://example.com/\x00.jpg", "NUL"),
        ("https://example.com/\ud800.jpg", "UTF-8"),
        ("https://example.com/" + "a" * rules.MAX_URL_LENGTH, "at most 2048"),
    ],
)
def test_other_urls_are_refused_with_a_reason(url: str, problem: str) -> None:
    found = image_url_problem(url)

    assert found is not None
    assert problem in found


@given(st.text(max_size=100).map(lambda s: "https://" + s) | st.text())
def test_image_url_problem_never_raises_and_accepts_only_http_urls(url: str) -> None:
    if image_url_problem(url) is None:
        parts = urlsplit(url)
        assert parts.scheme in ("http", "https")
        assert parts.hostname
        assert not any(ch.isspace() for ch in url)
        assert len(url) <= rules.MAX_URL_LENGTH

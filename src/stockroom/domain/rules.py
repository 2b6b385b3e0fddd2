"""Field rules shared by the API schemas and the product services."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 10_000
MAX_SKU_LENGTH = 64
MAX_IMAGES = 20
MAX_URL_LENGTH = 2048
MAX_PRICE = Decimal("99999999.99")
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)
# What str.isspace() calls whitespace, and the C0 controls and DEL: a CSV import checks
# every URL of its file with it, so a regex, not a loop over characters.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def text_problem(value: str) -> str | None:
    """Refuse what no database column should hold: NUL bytes and unpaired surrogates."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8 text"
    return None


def price_problem(value: Decimal) -> str | None:
    if not value.is_finite():
        return "must be a finite number"
    if value < 0:
        return "must be at least 0"
    if value > MAX_PRICE:
        return f"must be at most {MAX_PRICE}"
    if value != value.quantize(Decimal("0.01")):
        return "must have at most 2 decimal places"
    return None


def parse_price(raw: object) -> Decimal:
    """A price from a number or decimal string, exactly: `"19.99"` never becomes 19.989999."""
    if isinstance(raw, bool):
        raise ValueError("must be a number or a decimal string")
    if isinstance(raw, float):
        raw = repr(raw)  # shortest round-trip form: 19.99 -> "19.99"
    elif isinstance(raw, str) and not _DECIMAL_TEXT.fullmatch(raw.strip(" ")):
        # Plain ASCII decimals only: no "1_000", "+5", "1e2" or non-ASCII digits.
        raise ValueError("must be a number or a decimal string like 19.99")
    if isinstance(raw, int | Decimal):
        raw = str(raw)
    if not isinstance(raw, str):
        raise ValueError("must be a number or a decimal string")
    try:
        value = Decimal(raw.strip(" "))
    except InvalidOperation:
        raise ValueError("must be a number or a decimal string") from None
    problem = price_problem(value)
    if problem:
        raise ValueError(problem)
    return abs(value.quantize(Decimal("0.01")))  # abs: "-0" is 0.00, not -0.00


def image_url_problem(url: str) -> str | None:
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    problem = text_problem(url)
    if problem:
        return problem
    if _SPACE_OR_CONTROL.search(url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "must be a valid absolute http or https URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http or https URL"
    return None

"""List cursors: opaque, round-tripping, bound to their sort order, and forgery-proof
in the sense that a bad one is always a 422 (InvalidInput), never a crash."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockroom.domain.errors import InvalidInput
from stockroom.domain.models import Product
from stockroom.domain.pagination import MAX_CURSOR_LENGTH, decode_cursor, encode_cursor
from stockroom.domain.products import parse_sort_value, sort_cursor
from stockroom.domain.queries import Cursor, ProductSort

SORTS = st.sampled_from([sort.value for sort in ProductSort])
# Cursor values come from stored names, prices and times: text without lone surrogates.
VALUES = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
IDS = st.integers(min_value=1, max_value=2**63 - 1)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | VALUES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("svix"), inner),
    max_leaves=8,
)


def forge(data: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


@given(VALUES, IDS, SORTS)
def test_a_cursor_round_trips(value: str, ident: int, sort: str) -> None:
    token = encode_cursor(Cursor(value, ident), sort)

    assert decode_cursor(token, sort) == Cursor(value, ident)
    assert token.isascii()
    assert "=" not in token


@given(VALUES, IDS, SORTS, SORTS)
def test_a_cursor_only_works_for_its_own_sort(value: str, ident: int, made: str, used: str) -> None:
    token = encode_cursor(Cursor(value, ident), made)

    if made == used:
        assert decode_cursor(token, used) == Cursor(value, ident)
    else:
        with pytest.raises(InvalidInput):
            decode_cursor(token, used)


@pytest.mark.parametrize(
    "data",
    [
        {"s": "-created_at", "v": "x", "i": 0},
        {"s": "-created_at", "v": "x", "i": -1},
        {"s": "-created_at", "v": "x", "i": 2**63},
        {"s": "-created_at", "v": "x", "i": True},
        {"s": "-created_at", "v": "x", "i": 1.0},
        {"s": "-created_at", "v": "x", "i": "1"},
        {"s": "-created_at", "v": 5, "i": 1},
        {"s": "-created_at", "v": None, "i": 1},
        {"s": "-created_at", "v": "x" * 301, "i": 1},
        {"s": "-created_at", "v": "x"},
        {"v": "x", "i": 1},
        {"s": "created_at", "v": "x", "i": 1},
        ["-created_at", "x", 1],
        "cursor",
        None,
    ],
)
def test_forged_cursors_are_invalid_input(data: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        decode_cursor(forge(data), "-created_at")

    assert [e.field for e in refused.value.errors] == ["cursor"]


@pytest.mark.parametrize(
    "token",
    ["", "!!!!", "a", "abc", "é", "\x00", "eyJz", "x" * (MAX_CURSOR_LENGTH + 1), "e30"],
)
def test_garbage_cursors_are_invalid_input(token: str) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(token, "-created_at")


@given(st.text(max_size=MAX_CURSOR_LENGTH + 10), SORTS)
def test_decode_cursor_raises_only_invalid_input_on_any_string(token: str, sort: str) -> None:
    try:
        cursor = decode_cursor(token, sort)
    except InvalidInput:
        return
    assert 0 < cursor.id < 2**63


@given(JSON, SORTS)
def test_decode_cursor_raises_only_invalid_input_on_any_json(data: Any, sort: str) -> None:
    try:
        cursor = decode_cursor(forge(data), sort)
    except InvalidInput:
        return
    assert isinstance(data, dict)
    assert cursor == Cursor(data["v"], data["i"])


@given(VALUES, SORTS)
def test_a_forged_sort_value_is_invalid_input_never_a_crash(value: str, sort: str) -> None:
    # A well-formed cursor can still carry any value; the repository parses it with this.
    with contextlib.suppress(InvalidInput):
        parse_sort_value(ProductSort(sort), value)


@pytest.mark.parametrize(
    ("sort", "value"),
    [
        (ProductSort.CHEAPEST, "abc"),
        (ProductSort.CHEAPEST, "NaN"),
        (ProductSort.DEAREST, "-1"),
        (ProductSort.DEAREST, "1.001"),
        (ProductSort.DEAREST, "1e999999999"),
        (ProductSort.NEWEST, "2024-01-01T00:00:00"),  # naive: not one we made
        (ProductSort.OLDEST, "yesterday"),
    ],
)
def test_sort_values_we_never_issue_are_refused(sort: ProductSort, value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_sort_value(sort, value)


@pytest.mark.parametrize("sort", list(ProductSort))
def test_the_cursor_of_a_product_parses_back_to_its_sort_value(sort: ProductSort) -> None:
    product = Product(
        id=7,
        user_id=1,
        sku=None,
        product_name="Desk lamp",
        product_description=None,
        product_price=Decimal("19.90"),
        created_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        updated_at=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    )
    expected = {
        ProductSort.NEWEST: product.created_at,
        ProductSort.OLDEST: product.created_at,
        ProductSort.CHEAPEST: product.product_price,
        ProductSort.DEAREST: product.product_price,
        ProductSort.NAME: product.product_name,
    }[sort]

    cursor = decode_cursor(encode_cursor(sort_cursor(product, sort), sort.value), sort.value)

    assert cursor.id == product.id
    assert parse_sort_value(sort, cursor.value) == expected

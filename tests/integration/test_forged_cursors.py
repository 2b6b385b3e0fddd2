"""A forged cursor is a 422 or a valid page on both engines, for every sort: never a 500."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import Account

from stockroom.domain.queries import ProductSort

OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
MOMENTS = st.builds(
    lambda moment, tz: moment.replace(tzinfo=tz).isoformat(),
    st.one_of(
        st.datetimes(),
        st.sampled_from([datetime.min, datetime.max, datetime(1970, 1, 1)]),
    ),
    st.one_of(OFFSETS, st.just(UTC)),
)
VALUES = st.one_of(
    MOMENTS,
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=40),
    st.sampled_from(["\x00", "a\x00b", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]),
)


def forge(sort: str, value: str, ident: int) -> str:
    raw = orjson.dumps({"s": sort, "v": value, "i": ident})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sort=st.sampled_from([sort.value for sort in ProductSort]),
    value=VALUES,
    ident=st.integers(1, 2**63 - 1),
)
async def test_a_forged_cursor_is_422_or_a_page(
    client: httpx.AsyncClient, alice: Account, sort: str, value: str, ident: int
) -> None:
    response = await client.get(
        "/products",
        params={"sort": sort, "cursor": forge(sort, value, ident)},
        headers=alice.headers,
    )

    assert response.status_code in (200, 422), response.text


@pytest.mark.parametrize(
    ("sort", "value"),
    [
        ("-created_at", "0001-01-01T00:00:00+14:00"),
        ("created_at", "9999-12-31T23:59:59-14:00"),
        ("product_name", "a\x00b"),
    ],
)
async def test_cursor_values_that_crashed_the_database_are_422(
    client: httpx.AsyncClient, alice: Account, sort: str, value: str
) -> None:
    response = await client.get(
        "/products", params={"sort": sort, "cursor": forge(sort, value, 1)}, headers=alice.headers
    )

    assert response.status_code == 422

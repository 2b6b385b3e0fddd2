"""Two `stockroom serve` processes on one PostgreSQL and one Redis, as behind a load
balancer: a write through one is read through the other at once."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_processes import cli_token, is_up, two_instances
from tests.support.waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def instances(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    with two_instances(postgres_url, tmp_path) as running:
        yield running


async def test_a_patch_through_one_instance_is_read_through_the_other_at_once(
    instances: tuple[str, str, dict[str, str]],
) -> None:
    first, second, env = instances
    async with httpx.AsyncClient() as http:
        for base in (first, second):
            await eventually(functools.partial(is_up, http, base), timeout=30, interval=0.1)
        headers = {"Authorization": f"Bearer {cli_token(env, 'two@example.com')}"}
        created = await http.post(
            f"{first}/products",
            json={"product_name": "Old", "product_price": "1"},
            headers=headers,
        )
        url = f"/products/{created.json()['id']}"
        await http.get(second + url, headers=headers)
        assert (await http.get(second + url, headers=headers)).headers["x-cache"] == "HIT"

        await http.patch(first + url, json={"product_name": "New"}, headers=headers)
        seen = await http.get(second + url, headers=headers)

        assert seen.json()["product_name"] == "New"

        issued = (await http.post(f"{first}/me/tokens", headers=headers)).json()
        extra = {"Authorization": f"Bearer {issued['token']}"}
        assert (await http.get(f"{second}/me", headers=extra)).status_code == 200
        await http.delete(f"{first}/me/tokens/{issued['id']}", headers=headers)

        assert (await http.get(f"{second}/me", headers=extra)).status_code == 401

"""Two `stockroom serve` processes on one PostgreSQL and one Redis spend one write budget:
part of it through one, the rest through the other, and the next write on either is a 429."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_processes import cli_token, is_up, two_instances
from tests.support.waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
WRITES = 5


@pytest.fixture
def instances(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    with two_instances(
        postgres_url, tmp_path, STOCKROOM_RATE_LIMIT_WRITES_PER_MINUTE=str(WRITES)
    ) as running:
        yield running


async def test_two_processes_share_one_write_budget(
    instances: tuple[str, str, dict[str, str]],
) -> None:
    first, second, env = instances
    async with httpx.AsyncClient() as http:
        for base in (first, second):
            await eventually(functools.partial(is_up, http, base), timeout=30, interval=0.1)
        headers = {"Authorization": f"Bearer {cli_token(env, 'budget@example.com')}"}
        product = {"product_name": "Lamp", "product_price": "1"}

        spent = [await http.post(f"{first}/products", json=product, headers=headers)]
        spent += [await http.post(f"{first}/products", json=product, headers=headers)]
        spent += [
            await http.post(f"{second}/products", json=product, headers=headers)
            for _ in range(WRITES - 2)
        ]
        over = [
            await http.post(f"{base}/products", json=product, headers=headers)
            for base in (first, second)
        ]
        read = await http.get(f"{second}/products", headers=headers)

    assert [response.status_code for response in spent] == [201] * WRITES
    assert [response.status_code for response in over] == [429, 429]
    assert all(response.headers["ratelimit-limit"] == str(WRITES) for response in over)
    assert all(int(response.headers["retry-after"]) >= 1 for response in over)
    assert read.status_code == 200

"""The contract's rate limits over HTTP: writes per user, failed authentications per client
address, and a cache outage that lets everything through."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI
from tests.conftest import Account
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import REDIS_URL, free_port
from tests.support.settings import make_settings

from stockroom.adapters.rate_limit import UnlimitedRateLimiter, build_rate_limiter
from stockroom.api.errors import PROBLEM_JSON
from stockroom.bootstrap import Role, bootstrap
from stockroom.config import Settings
from stockroom.domain.ports import RateLimit, RateLimiter

WRITES = 3
AUTH_FAILURES = 4
PRODUCT = {"product_name": "Lamp", "product_price": "1"}
RATE_LIMIT_HEADERS = ("retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


@pytest.fixture(autouse=True)
def _not_near_a_window_edge() -> None:
    """The in-memory counter's windows start on the clock's minute; crossing one mid-test
    gives back part of a spent budget, so start with a few seconds of the minute left."""
    left = 60 - time.time() % 60
    if left < 8:
        time.sleep(left + 0.05)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "media",
        rate_limit_writes_per_minute=WRITES,
        rate_limit_auth_failures_per_minute=AUTH_FAILURES,
    )


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def assert_rate_limited(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 429
    assert all(name in response.headers for name in RATE_LIMIT_HEADERS)
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-reset"] == str(retry_after)


async def test_a_user_over_the_write_limit_gets_429_and_still_reads(
    client: httpx.AsyncClient, alice: Account
) -> None:
    created = [
        await client.post("/products", json=PRODUCT, headers=alice.headers) for _ in range(WRITES)
    ]
    url = f"/products/{created[0].json()['id']}"

    over = await client.post("/products", json=PRODUCT, headers=alice.headers)
    patch = await client.patch(url, json={"product_name": "New"}, headers=alice.headers)
    delete = await client.delete(url, headers=alice.headers)
    one = await client.get(url, headers=alice.headers)
    listed = await client.get("/products", headers=alice.headers)
    me = await client.get("/me", headers=alice.headers)

    assert [response.status_code for response in created] == [201] * WRITES
    for refused in (over, patch, delete):
        assert_rate_limited(refused, WRITES)
    assert one.status_code == 200
    assert one.json()["product_name"] == "Lamp"
    assert len(listed.json()["items"]) == WRITES
    assert me.status_code == 200


async def test_another_user_keeps_their_own_write_budget(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    for _ in range(WRITES + 1):
        await client.post("/products", json=PRODUCT, headers=alice.headers)

    bobs = [await client.post("/products", json=PRODUCT, headers=bob.headers) for _ in range(2)]

    assert [response.status_code for response in bobs] == [201, 201]


async def test_failed_authentication_from_one_address_gets_429_after_the_limit(
    app: FastAPI, alice: Account
) -> None:
    wrong = {"Authorization": "Bearer sr_not-a-real-token"}
    async with (
        client_from(app, "203.0.113.7") as attacker,
        client_from(app, "198.51.100.1") as other,
    ):
        failures = [await attacker.get("/me", headers=wrong) for _ in range(AUTH_FAILURES)]
        over_wrong = await attacker.get("/me", headers=wrong)
        over_missing = await attacker.get("/products")
        over_plain_route = await attacker.get("/products/1", headers=wrong)
        valid_from_there = await attacker.get("/me", headers=alice.headers)
        elsewhere = await other.get("/me", headers=wrong)

    assert [response.status_code for response in failures] == [401] * AUTH_FAILURES
    for refused in (over_wrong, over_missing, over_plain_route):
        assert_rate_limited(refused, AUTH_FAILURES)
    assert valid_from_there.status_code == 200  # a valid token is not a failure
    assert elsewhere.status_code == 401


async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(app: FastAPI) -> None:
    """A proxy on 127.0.0.1 (STOCKROOM_FORWARDED_ALLOW_IPS) speaks for many clients: each
    spends its own budget. Another peer's X-Forwarded-For is not believed."""
    wrong = {"Authorization": "Bearer sr_not-a-real-token"}
    attacker = {**wrong, "X-Forwarded-For": "203.0.113.9"}
    async with client_from(app, "127.0.0.1") as proxy, client_from(app, "198.51.100.7") as peer:
        for _ in range(AUTH_FAILURES):
            await proxy.get("/me", headers=attacker)
        over = await proxy.get("/me", headers=attacker)
        someone_else = await proxy.get("/me", headers={**wrong, "X-Forwarded-For": "192.0.2.44"})
        for _ in range(AUTH_FAILURES):
            await peer.get("/me", headers=attacker)  # counted for 198.51.100.7, not .9
        the_peer = await peer.get("/me", headers=wrong)

    assert_rate_limited(over, AUTH_FAILURES)
    assert someone_else.status_code == 401
    assert_rate_limited(the_peer, AUTH_FAILURES)


async def test_a_limit_of_zero_turns_the_limits_off(database_url: str, tmp_path: Path) -> None:
    off = make_settings(
        database_url,
        tmp_path / "media",
        rate_limit_writes_per_minute=0,
        rate_limit_auth_failures_per_minute=0,
    )
    services = await bootstrap(off, Role.API)
    try:
        assert services.write_limit is None
        assert services.auth_failure_limit is None
        assert isinstance(services.rate_limiter, UnlimitedRateLimiter)
    finally:
        await services.aclose()


async def test_write_operations_document_the_429(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    create = schema["paths"]["/products"]["post"]["responses"]["429"]

    assert create["content"][PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(
        create["headers"]
    )


class TestRedisDown:
    """The cache URL names a port nothing listens on: writes pass, a warning is logged."""

    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return make_settings(
            database_url,
            tmp_path / "media",
            cache_url=f"redis://127.0.0.1:{free_port()}/0",
            cache_socket_timeout_seconds=0.5,
            rate_limit_writes_per_minute=1,
            rate_limit_auth_failures_per_minute=1,
        )

    async def test_writes_pass_and_a_warning_is_logged(
        self, client: httpx.AsyncClient, alice: Account
    ) -> None:
        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            created = [
                await client.post("/products", json=PRODUCT, headers=alice.headers)
                for _ in range(5)
            ]
            elapsed = time.monotonic() - started
            unauthenticated = [await client.get("/me") for _ in range(3)]

        assert [response.status_code for response in created] == [201] * 5
        assert [response.status_code for response in unauthenticated] == [401] * 3
        warnings = [entry for entry in logs if entry["event"] == "rate_limit.unavailable"]
        assert len(warnings) == 1  # then the breaker skips Redis for its cooldown
        assert warnings[0]["log_level"] == "warning"
        assert elapsed < 5 * 0.5  # not one socket timeout per write


@pytest.fixture
async def two_processes_limiters() -> AsyncIterator[tuple[RateLimiter, RateLimiter]]:
    """Two limiters on one Redis, as two API processes build them."""
    client = require_redis()
    prefix = unique_prefix()
    first, second = (
        build_rate_limiter(REDIS_URL, socket_timeout=2.0, breaker_cooldown=5.0, key_prefix=prefix)
        for _ in range(2)
    )
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()
        await delete_prefix(client, prefix)
        await client.aclose()


@pytest.mark.redis
async def test_limiters_on_one_redis_spend_one_budget(
    two_processes_limiters: tuple[RateLimiter, RateLimiter],
) -> None:
    first, second = two_processes_limiters
    limit = RateLimit("writes", 4)

    spent = [(await first.hit(limit, "user:1")).allowed for _ in range(2)]
    spent += [(await second.hit(limit, "user:1")).allowed for _ in range(2)]
    refused = [await limiter.hit(limit, "user:1") for limiter in (first, second)]
    other_user = await first.hit(limit, "user:2")

    assert spent == [True] * 4
    assert [decision.allowed for decision in refused] == [False, False]
    assert all(0 < decision.retry_after <= 60 for decision in refused)
    assert other_user.allowed

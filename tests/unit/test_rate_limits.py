"""Rate limits: the sliding-window decisions on the in-memory storage, remembered refusals,
a failing storage letting hits through, and the 429 they become over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import structlog
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage

from stockroom.adapters.cache.breaker import CircuitBreaker
from stockroom.adapters.rate_limit import (
    UnlimitedRateLimiter,
    WindowRateLimiter,
    build_rate_limiter,
)
from stockroom.api.errors import PROBLEM_JSON, install_error_handlers
from stockroom.domain.errors import RateLimited
from stockroom.domain.ports import RateLimit

# An hour-long window: the in-memory counter's windows start on the clock's hour, and no
# test here runs long enough to cross one.
FIVE = RateLimit("writes", 5, seconds=3600)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BrokenStorage(MemoryStorage):
    """A storage whose every hit fails, as a dead Redis does."""

    STORAGE_SCHEME: list[str] = []  # not registered with `limits` under a URL scheme

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        self.calls += 1
        raise ConnectionError("connection refused")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage() -> AsyncIterator[MemoryStorage]:
    memory = MemoryStorage()
    yield memory
    if memory.timer is not None:
        memory.timer.cancel()


@pytest.fixture
def limiter(storage: MemoryStorage, clock: FakeClock) -> WindowRateLimiter:
    return WindowRateLimiter(storage, clock=clock)


async def test_a_key_may_spend_its_whole_budget_at_once_then_is_refused(
    limiter: WindowRateLimiter,
) -> None:
    decisions = [await limiter.hit(FIVE, "user:1") for _ in range(5)]
    refused = await limiter.hit(FIVE, "user:1")

    assert all(decision.allowed for decision in decisions)
    assert not refused.allowed
    assert 0 < refused.retry_after <= FIVE.seconds


async def test_keys_and_budgets_are_counted_apart(limiter: WindowRateLimiter) -> None:
    for _ in range(5):
        await limiter.hit(FIVE, "user:1")
    other_budget = RateLimit("auth-failures", 5, seconds=3600)

    assert (await limiter.hit(FIVE, "user:2")).allowed
    assert (await limiter.hit(other_budget, "user:1")).allowed
    assert not (await limiter.hit(FIVE, "user:1")).allowed


async def test_a_refusal_is_remembered_until_it_expires_without_asking_the_storage(
    limiter: WindowRateLimiter, storage: MemoryStorage, clock: FakeClock
) -> None:
    for _ in range(5):
        await limiter.hit(FIVE, "user:1")
    first = await limiter.hit(FIVE, "user:1")
    await storage.reset()  # the storage would now allow: only the memory refuses

    clock.now += 1
    again = await limiter.hit(FIVE, "user:1")
    clock.now += first.retry_after
    after = await limiter.hit(FIVE, "user:1")

    assert not again.allowed
    assert again.retry_after == pytest.approx(first.retry_after - 1)
    assert after.allowed


async def test_a_failing_storage_lets_hits_through_logs_once_and_rests_for_the_cooldown(
    clock: FakeClock,
) -> None:
    broken = BrokenStorage()
    limiter = WindowRateLimiter(
        broken,
        storage_errors=(ConnectionError,),
        breaker=CircuitBreaker(cooldown=5.0, clock=clock),
        clock=clock,
    )
    with structlog.testing.capture_logs() as logs:
        during = [await limiter.hit(FIVE, "user:1") for _ in range(10)]
        calls_during_cooldown = broken.calls
        clock.now += 5.0
        probe = await limiter.hit(FIVE, "user:1")

    assert all(decision.allowed for decision in during)
    assert probe.allowed
    assert calls_during_cooldown == 1
    assert broken.calls == 2
    assert [entry["event"] for entry in logs] == ["rate_limit.unavailable"]
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["error"] == "ConnectionError"


async def test_the_unlimited_limiter_allows_everything() -> None:
    limiter = UnlimitedRateLimiter()

    assert all([(await limiter.hit(RateLimit("writes", 1), "user:1")).allowed for _ in range(5)])


def test_a_limit_needs_a_positive_amount_and_window() -> None:
    with pytest.raises(ValueError, match="amount"):
        RateLimit("writes", 0)
    with pytest.raises(ValueError, match="seconds"):
        RateLimit("writes", 1, seconds=0)


@pytest.mark.parametrize("url", ["memory://", "none://"])
async def test_embedded_cache_urls_count_in_memory(url: str) -> None:
    limiter = build_rate_limiter(url, socket_timeout=0.25, breaker_cooldown=5, key_prefix="t:")
    one = RateLimit("writes", 1, seconds=3600)

    assert isinstance(limiter, WindowRateLimiter)
    assert (await limiter.hit(one, "user:1")).allowed
    assert not (await limiter.hit(one, "user:1")).allowed
    await limiter.close()


def test_an_unknown_cache_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported cache_url scheme"):
        build_rate_limiter("memcached://x", socket_timeout=1, breaker_cooldown=1, key_prefix="")


async def test_rate_limited_is_a_429_problem_with_the_rate_limit_headers() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/things")
    async def spent() -> None:
        raise RateLimited("over the limit", limit=600, retry_after=12)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.post("/things")

    assert response.status_code == 429
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"].endswith("/rate_limited")
    assert response.headers["retry-after"] == "12"
    assert response.headers["ratelimit-limit"] == "600"
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-reset"] == "12"

"""The cache circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from stockroom.adapters.cache.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(cooldown=5.0, clock=clock)


def test_closed_breaker_lets_every_call_through(breaker: CircuitBreaker) -> None:
    assert all(breaker.allow() for _ in range(10))
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.is_open


def test_one_failure_opens_it_and_calls_are_refused_until_the_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    assert breaker.record_failure() is True
    assert breaker.state is BreakerState.OPEN
    clock.now += 4.99
    assert not breaker.allow()


def test_after_the_cooldown_exactly_one_probe_goes_through(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()
    assert not breaker.allow()


def test_a_successful_probe_closes_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    assert breaker.record_success() is True
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.record_success() is False


def test_a_failed_probe_reopens_it_for_a_fresh_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    assert breaker.record_failure() is False  # still the same outage: no new "opened" event
    assert breaker.state is BreakerState.OPEN
    clock.now += 4.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_a_probe_that_never_reports_is_replaced_after_another_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    clock.now += 4.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_a_late_success_does_not_close_an_open_breaker(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    breaker.record_failure()
    assert breaker.record_success() is False
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_threshold_counts_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(cooldown=1.0, failure_threshold=3, clock=clock)
    assert breaker.record_failure() is False
    assert breaker.record_failure() is False
    breaker.record_success()
    assert breaker.record_failure() is False
    assert breaker.record_failure() is False
    assert not breaker.is_open
    assert breaker.record_failure() is True
    assert breaker.state is BreakerState.OPEN


@pytest.mark.parametrize(("cooldown", "threshold"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_rejects_nonsense_settings(cooldown: float, threshold: int) -> None:
    with pytest.raises(ValueError, match="cooldown"):
        CircuitBreaker(cooldown=cooldown, failure_threshold=threshold)

"""A small circuit breaker, so a dead Redis costs one socket timeout per cooldown, not per call."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed -> open after `failure_threshold` consecutive failures; after `cooldown` seconds one
    probe call is let through (half-open): its success closes the breaker, its failure reopens it.

    Not thread-safe; meant for one event loop, where `allow` and `record_*` never interleave.
    """

    def __init__(
        self,
        *,
        cooldown: float,
        failure_threshold: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cooldown <= 0 or failure_threshold < 1:
            raise ValueError("cooldown must be > 0 and failure_threshold >= 1")
        self._cooldown = cooldown
        self._threshold = failure_threshold
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started_at = 0.0

    @property
    def cooldown(self) -> float:
        return self._cooldown

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def is_open(self) -> bool:
        """True while calls are being refused or a probe is pending (the backend is suspect)."""
        return self._state is not BreakerState.CLOSED

    def allow(self) -> bool:
        """Whether the caller may try the backend now; in half-open, only one probe at a time.

        A probe that never reports back (a cancelled task) is replaced after another cooldown.
        """
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at < self._cooldown:
                return False
            self._state = BreakerState.HALF_OPEN
        elif now - self._probe_started_at < self._cooldown:
            return False
        self._probe_started_at = now
        return True

    def record_success(self) -> bool:
        """Note a call that reached the backend; True if this closed an open breaker."""
        self._failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._state = BreakerState.CLOSED
            return True
        return False

    def record_failure(self) -> bool:
        """Note a failed call; True if this opened the breaker (it was closed before)."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            was_closed = self._state is BreakerState.CLOSED
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            return was_closed
        return False

"""`RateLimiter` on a `limits` storage: a sliding window counter per key and budget.

The counter lets a key spend its whole budget at once; afterwards the previous window's count
weighs less as the current window ages, so the budget comes back gradually, not all at once.
A storage failure lets the hit through: a breaker then skips the storage for a cooldown, so a
dead Redis costs one socket timeout per cooldown, not one per request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from stockroom.adapters.cache.breaker import CircuitBreaker
from stockroom.domain.ports import RateLimit, RateLimitDecision

ALLOWED = RateLimitDecision(allowed=True)
MAX_REMEMBERED_REFUSALS = 10_000


def _logger() -> structlog.typing.FilteringBoundLogger:
    """A fresh logger per (rare) event, so it follows the logging config of the moment."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)
    return logger


class WindowRateLimiter:
    """Counts hits in a `limits` storage, one storage call per allowed hit.

    A refusal is remembered in process until it expires: no hit can succeed before then on
    any process, so a client hammering past its budget costs no further storage calls.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        storage_errors: tuple[type[Exception], ...] = (),
        breaker: CircuitBreaker | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self._storage_errors = storage_errors
        self._breaker = breaker
        self._on_close = on_close
        self._clock = clock
        self._items: dict[RateLimit, RateLimitItem] = {}
        self._refused_until: dict[tuple[str, str], float] = {}

    async def hit(self, limit: RateLimit, key: str) -> RateLimitDecision:
        remembered = self._remembered_refusal(limit, key)
        if remembered is not None:
            return remembered
        if self._breaker is not None and not self._breaker.allow():
            return ALLOWED
        try:
            decision = await self._count(limit, key)
        except self._storage_errors as exc:
            self._note_failure(limit, exc)
            return ALLOWED
        if self._breaker is not None and self._breaker.record_success():
            _logger().warning("rate_limit.recovered")
        if not decision.allowed and decision.retry_after > 0:
            self._remember_refusal(limit, key, decision.retry_after)
        return decision

    async def close(self) -> None:
        if self._on_close is not None:
            await self._on_close()

    async def _count(self, limit: RateLimit, key: str) -> RateLimitDecision:
        item = self._item(limit)
        if await self._strategy.hit(item, limit.name, key):
            return ALLOWED
        # Only refusals pay for a second call: the allowed path needs no numbers.
        stats = await self._strategy.get_window_stats(item, limit.name, key)
        retry_after = stats.reset_time - time.time()
        if retry_after <= 0:
            # `limits` computes the wait modulo the window, so a count read at the very
            # millisecond its window began says 0: assume one hit's share of the window.
            retry_after = limit.seconds / limit.amount
        return RateLimitDecision(allowed=False, retry_after=retry_after)

    def _item(self, limit: RateLimit) -> RateLimitItem:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = RateLimitItemPerSecond(limit.amount, limit.seconds)
        return item

    def _remembered_refusal(self, limit: RateLimit, key: str) -> RateLimitDecision | None:
        until = self._refused_until.get((limit.name, key))
        if until is None:
            return None
        left = until - self._clock()
        if left > 0:
            return RateLimitDecision(allowed=False, retry_after=left)
        del self._refused_until[limit.name, key]
        return None

    def _remember_refusal(self, limit: RateLimit, key: str, retry_after: float) -> None:
        now = self._clock()
        if len(self._refused_until) >= MAX_REMEMBERED_REFUSALS:
            expired = [k for k, until in self._refused_until.items() if until <= now]
            for stale in expired:
                del self._refused_until[stale]
            if len(self._refused_until) >= MAX_REMEMBERED_REFUSALS:
                self._refused_until.clear()  # only an optimisation: the storage still counts
        self._refused_until[limit.name, key] = now + retry_after

    def _note_failure(self, limit: RateLimit, exc: Exception) -> None:
        opened = self._breaker.record_failure() if self._breaker is not None else True
        if opened:
            _logger().warning(
                "rate_limit.unavailable",
                limit=limit.name,
                error=type(exc).__name__,
                detail=str(exc),
                cooldown=self._breaker.cooldown if self._breaker is not None else None,
            )

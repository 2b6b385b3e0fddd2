"""Prometheus metrics of the product cache, shared by every cache adapter in the process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CACHE_REQUESTS = Counter(
    "stockroom_cache_requests_total",
    "Product cache reads by outcome (error: Redis failed or the breaker was open).",
    ["result"],
)
CACHE_ERRORS = Counter(
    "stockroom_cache_errors_total",
    "Product cache calls that failed against the backend, by operation.",
    ["operation"],
)
CACHE_BREAKER_OPEN = Gauge(
    "stockroom_cache_breaker_open",
    "1 while the cache circuit breaker is open or half-open, else 0.",
    multiprocess_mode="livemax",  # serve --workers N: 1 if any process's breaker is open
)

"""Prometheus metrics of the live-status streams (`GET /events`), shared by both hubs."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SSE_STREAMS_OPEN = Gauge(
    "stockroom_sse_streams_open",
    "Live-status subscriptions (GET /events streams) open in this process.",
    multiprocess_mode="livesum",  # serve --workers N: the streams of the live processes
)
SSE_CLIENTS_DROPPED = Counter(
    "stockroom_sse_clients_dropped_total",
    "Live-status streams ended because the client fell behind (buffer_full: more events "
    "waiting than its buffer holds; send_timeout: a write to it blocked too long).",
    ["reason"],
)
LIVE_PUBLISH_FAILURES = Counter(
    "stockroom_live_publish_failures_total",
    "Live-status events dropped because the backend could not store them.",
)

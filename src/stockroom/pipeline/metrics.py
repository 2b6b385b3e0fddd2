"""Prometheus metrics of the image pipeline (per process; workers can serve their own)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

IMAGE_JOBS = Counter(
    "stockroom_image_jobs_total",
    "Image job deliveries by outcome (succeeded, retried, dead_lettered, skipped)",
    ["outcome"],
)
IMAGE_JOB_SECONDS = Histogram(
    "stockroom_image_job_duration_seconds",
    "Time to fetch, process and store one image",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
IMAGE_BYTES = Counter("stockroom_image_bytes_total", "Image bytes in and out", ["direction"])
JOBS_BY_STATE = Gauge(
    "stockroom_image_jobs_in_state",
    "Image jobs by state, read from the database at scrape",
    ["state"],
    multiprocess_mode="mostrecent",  # read from the database: the latest scrape's reading
)
OUTBOX_BACKLOG = Gauge(
    "stockroom_outbox_unpublished",
    "Job messages committed but not yet on the broker",
    multiprocess_mode="mostrecent",
)
WEBHOOK_ATTEMPTS = Counter(
    "stockroom_webhook_attempts_total",
    "Webhook delivery attempts by outcome (delivered, retry, gone, refused)",
    ["outcome"],
)

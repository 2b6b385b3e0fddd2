"""Settings for tests: built directly (never from the environment or a .env file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockroom.config import Settings


def make_settings(database_url: str, media: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "storage_url": f"file://{media}",
        "public_base_url": "http://testserver",
        "log_format": "console",
        "log_level": "WARNING",
        # A loaded machine can stall a Redis reply past the 0.25 s default. One timed-out
        # invalidation (say, the embedded worker's after a job) opens the breaker and leaves the
        # old body served for the whole TTL: the outage case, which the fault tests cover with
        # their own timeouts (tests/integration/test_*cache_faults*.py), not what the others test.
        "cache_socket_timeout_seconds": 2.0,
        # Tests write a lot as one user; tests/*/test_rate_limits*.py set their own limits.
        "rate_limit_writes_per_minute": 1_000_000,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def pipeline_settings(database_url: str, media: Path, **overrides: Any) -> Settings:
    """For tests of the embedded pipeline: the image server is on loopback, so private
    addresses are allowed; retries are quick."""
    values: dict[str, Any] = {
        "allow_private_networks": True,
        "job_max_retries": 2,
        "job_min_backoff_ms": 20,
        "job_max_backoff_ms": 100,
        **overrides,
    }
    return make_settings(database_url, media, **values)

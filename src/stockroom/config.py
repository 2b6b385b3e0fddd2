"""Settings: one typed object, read once from the environment (or `.env`), passed down."""

from __future__ import annotations

import functools
import ipaddress
import os
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stockroom.domain.webhooks import (
    DEFAULT_RETRY_SCHEDULE,
    parse_retry_schedule,
    signing_secret_problem,
)

_PLACEHOLDER_SECRETS = {"", "changeme", "whsec_changeme"}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Settings(BaseSettings):
    """Every setting of Stockroom; the defaults give the embedded, one-process mode."""

    model_config = SettingsConfigDict(
        env_prefix="STOCKROOM_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./stockroom.db"
    database_pool_size: int = Field(10, ge=1, le=200)
    broker_url: str = "memory://"
    cache_url: str = "memory://"
    storage_url: str = "file://./media"
    public_base_url: str = "http://127.0.0.1:8000"
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: comma-separated
    # addresses or networks, or "*" (the client address decides the failed-auth budget).
    forwarded_allow_ips: str = "127.0.0.1"
    allow_private_networks: bool = False
    # Comma-separated http(s)://<ip>:<port> origins the guarded download may fetch from
    # although they are private (`serve --demo` adds its own); see docs/configuration.md.
    fetch_allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()

    jpeg_quality: int = Field(50, ge=1, le=100)
    max_image_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(50_000_000, ge=1)
    fetch_timeout_seconds: float = Field(15.0, gt=0)
    max_redirects: int = Field(3, ge=0, le=10)

    cache_key_prefix: str = Field("stockroom:", min_length=1, max_length=64)
    cache_ttl_seconds: int = Field(300, ge=1)
    cache_socket_timeout_seconds: float = Field(0.25, gt=0)
    cache_breaker_cooldown_seconds: float = Field(5.0, gt=0)
    # Per-process near-cache in front of redis:// (0 turns it off); see docs/configuration.md.
    cache_near_max_entries: int = Field(10_000, ge=0)
    # false: GET /products/{id} always reads the database (tokens stay cached); see docs.
    cache_products: bool = True

    # None: one per core, as Dramatiq's own CLI does (`worker_process_count`).
    worker_processes: int | None = Field(None, ge=1, le=64)
    worker_threads: int = Field(2, ge=1, le=64)
    # libvips operations at once per worker process; threads beyond it download, store and
    # write back meanwhile, so a core does not idle on a job's I/O (docs/configuration.md).
    worker_image_concurrency: int = Field(1, ge=1, le=64)
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    # Where each worker process serves /metrics (port + its index); 0.0.0.0 to be scraped
    # from another host.
    worker_metrics_host: str = "127.0.0.1"
    job_max_retries: int = Field(5, ge=0, le=50)
    job_min_backoff_ms: int = Field(1_000, ge=1)
    job_max_backoff_ms: int = Field(300_000, ge=1)

    # Per minute, counted where the cache is (Redis: shared by every process); 0 turns one off.
    rate_limit_writes_per_minute: int = Field(600, ge=0)
    rate_limit_auth_failures_per_minute: int = Field(60, ge=0)

    # GET /events fans out through Redis (unset: the cache's Redis, else in process); a
    # stream that falls this many events behind is dropped (it reconnects and catches up).
    events_url: str | None = None
    events_buffer_size: int = Field(256, ge=1, le=100_000)
    # Requests one API process serves at once, open event streams included; more wait for
    # a slot. Unset: the server's default (granian: its listen backlog, 1,024, / processes).
    max_concurrent_requests: int | None = Field(None, ge=1, le=1_000_000)

    # How long a create's first response is kept for replay under its Idempotency-Key.
    idempotency_ttl_hours: int = Field(24, ge=1, le=24 * 30)
    # How long a direct upload's URL works (POST /jobs/upload-url); S3 caps pre-signed URLs
    # at 7 days. Jobs not started by then fail as `upload_expired`, found every
    # `upload_expiry_sweep_seconds` by each API process.
    upload_url_ttl_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600)
    upload_expiry_sweep_seconds: float = Field(30.0, gt=0)

    # CSV imports (POST /imports): the file's size, its rows and URLs per row; rows written
    # per transaction; how often each API process looks for imports whose images are done.
    import_max_bytes: int = Field(50 * 1024 * 1024, ge=1)
    import_max_rows: int = Field(100_000, ge=1)
    import_max_urls_per_row: int = Field(20, ge=1, le=20)
    import_batch_rows: int = Field(500, ge=1, le=10_000)
    import_sweep_seconds: float = Field(0.25, gt=0)

    log_format: Literal["json", "console"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Signs webhooks (`whsec_<base64 of 24..64 bytes>`); unset: callback URLs are refused.
    webhook_secret: str | None = None
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    # Seconds before each retry (each drawn from its half to its whole, "equal jitter").
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE

    @field_validator("database_url")
    @classmethod
    def _use_async_driver(cls, url: str) -> str:
        """Accept the plain scheme operators copy from their provider and pick our driver."""
        for plain, driver in (
            ("postgres://", "postgresql+asyncpg://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        return parse_retry_schedule(value) if isinstance(value, str) else value

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, secret: str | None) -> str | None:
        if not secret:  # "" (an empty line in .env) is unset
            return None
        if secret not in _PLACEHOLDER_SECRETS and (problem := signing_secret_problem(secret)):
            raise ValueError(f"STOCKROOM_WEBHOOK_SECRET {problem}")
        return secret

    @field_validator("fetch_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("fetch_allowed_origins")
    @classmethod
    def _canonical_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_canonical_origin(origin) for origin in origins)

    @field_validator("public_base_url")
    @classmethod
    def _strip_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @model_validator(mode="after")
    def _enforce_real_secrets(self) -> Settings:
        secret = self.webhook_secret
        if (
            self.environment == "production"
            and secret is not None
            and secret in _PLACEHOLDER_SECRETS
        ):
            raise ValueError("STOCKROOM_WEBHOOK_SECRET is a placeholder: set a real secret")
        return self

    @model_validator(mode="after")
    def _shared_cache_with_separate_workers(self) -> Settings:
        """Workers in other processes cannot invalidate an in-process cache: refuse the
        combination rather than serve stale products."""
        if not self.is_embedded_broker and self.cache_url.startswith("memory:"):
            raise ValueError(
                "STOCKROOM_CACHE_URL=memory:// only works with the embedded broker (memory://); "
                "with separate workers use redis:// (or none://)"
            )
        return self

    @property
    def effective_events_url(self) -> str:
        """Where live events go: `events_url`, else the cache's Redis, else in process."""
        if self.events_url:
            return self.events_url
        if self.cache_url.startswith(("redis://", "rediss://")):
            return self.cache_url
        return "memory://"

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format is not None:
            return self.log_format
        return "console" if self.environment == "development" else "json"

    @property
    def worker_process_count(self) -> int:
        return self.worker_processes or os.cpu_count() or 1

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    @property
    def fetch_allowed_endpoints(self) -> frozenset[tuple[IPAddress, int]]:
        """The (address, port) pairs of `fetch_allowed_origins`, as the download vets them."""
        found: set[tuple[IPAddress, int]] = set()
        for origin in self.fetch_allowed_origins:  # canonical: scheme://ip:port
            host, _, port = origin.partition("://")[2].rpartition(":")
            found.add((ipaddress.ip_address(host.strip("[]")), int(port)))
        return frozenset(found)


def _canonical_origin(origin: str) -> str:
    """`scheme://ip:port` with the port spelled out, or ValueError: an origin names an IP
    literal (a name could resolve elsewhere later) and nothing after the port."""
    default_port = {"http": 80, "https": 443}
    try:
        parts = urlsplit(origin)
        port = default_port.get(parts.scheme) if parts.port is None else parts.port
    except ValueError as exc:
        raise ValueError(f"{origin!r} is not an origin: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or not port:
        raise ValueError(f"{origin!r} is not an http(s)://<ip>:<port> origin")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{origin!r} has more than scheme, address and port")
    try:
        ip = ipaddress.ip_address(parts.hostname)
    except ValueError as exc:
        raise ValueError(f"{origin!r}: the host must be an IP address, not a name") from exc
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"{origin!r}: {ip} is not a unicast address")
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{parts.scheme}://{host}:{port}"


@functools.cache
def get_settings() -> Settings:
    """The process's settings; only entrypoints (app factory, CLI, worker) call this."""
    return Settings()

"""What a process holds, by role: the object `bootstrap` builds and every entry point uses."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

import dramatiq
from sqlalchemy.ext.asyncio import AsyncEngine

from stockroom.background import BackgroundTask
from stockroom.config import Settings
from stockroom.domain.live import LiveHub
from stockroom.domain.ports import (
    Admissions,
    ImageStore,
    JobTransitions,
    Lookups,
    ProductCache,
    RateLimit,
    RateLimiter,
    TokenCache,
    UnitOfWorkFactory,
)
from stockroom.pipeline.processing import PipelineContext
from stockroom.pipeline.relay import OutboxRelay

ReadinessCheck = Callable[[], Awaitable[None]]


class Role(enum.StrEnum):
    """Which kind of process: it decides what `bootstrap` builds."""

    API = "api"  # HTTP, with the outbox relay publishing to a separate worker fleet
    WORKER = "worker"  # the image pipeline, fed by RabbitMQ
    EMBEDDED = "embedded"  # one process: the API, the relay and the pipeline
    CLI = "cli"  # one command: database, cache and storage, nothing running


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything a process of one role needs, built by `bootstrap`. It owns what it holds:
    `aclose()` closes it all, in the reverse order of building."""

    settings: Settings
    role: Role
    engine: AsyncEngine
    uow: UnitOfWorkFactory
    read_uow: UnitOfWorkFactory  # no transaction around a single statement
    store: ImageStore
    cache: ProductCache
    token_cache: TokenCache
    lookups: Lookups
    transitions: JobTransitions
    admissions: Admissions  # POST /products and POST /jobs without an Idempotency-Key
    readiness: Mapping[str, ReadinessCheck]
    rate_limiter: RateLimiter
    live: LiveHub  # publishes job, image and import changes; GET /events subscribes
    write_limit: RateLimit | None = None  # None: no limit
    auth_failure_limit: RateLimit | None = None
    broker: dramatiq.Broker | None = None  # API and embedded: the relay publishes on it
    relay: OutboxRelay | None = None
    # API and embedded: expiring direct uploads, finishing imports, the outbox listener.
    chores: tuple[BackgroundTask, ...] = ()
    pipeline: PipelineContext | None = None  # worker and embedded
    resources: AsyncExitStack

    async def aclose(self) -> None:
        await self.resources.aclose()

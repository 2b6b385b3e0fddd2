"""The composition root: builds every adapter from the settings, by URL scheme, once per
process. The app lifespan, the CLI and the worker all call `bootstrap`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dramatiq
from sqlalchemy.ext.asyncio import AsyncEngine

from stockroom.adapters.broker import DramatiqTaskQueue, build_broker
from stockroom.adapters.cache import (
    CacheOptions,
    WriteOnlyCache,
    build_product_cache,
    build_token_cache,
)
from stockroom.adapters.rate_limit import UnlimitedRateLimiter, build_rate_limiter
from stockroom.adapters.storage import build_image_store
from stockroom.config import Settings
from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.engine import create_engine
from stockroom.db.health import ping_database
from stockroom.db.job_transitions import AsyncpgJobTransitions, UnitOfWorkJobTransitions
from stockroom.db.lookups import AsyncpgLookups, UnitOfWorkLookups
from stockroom.db.uow import SqlUnitOfWork
from stockroom.domain.ports import (
    ImageStore,
    JobTransitions,
    Lookups,
    ProductCache,
    RateLimit,
    RateLimiter,
    TokenCache,
    UnitOfWork,
)
from stockroom.pipeline.address_policy import AddressPolicy
from stockroom.pipeline.fetch import ImageFetcher
from stockroom.pipeline.processing import PipelineContext
from stockroom.pipeline.relay import OutboxRelay

ReadinessCheck = Callable[[], Awaitable[None]]


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    store: ImageStore
    cache: ProductCache
    token_cache: TokenCache | None = None
    lookups: Lookups = field(init=False)  # set by bootstrap()
    transitions: JobTransitions = field(init=False)  # set by bootstrap()
    broker: dramatiq.Broker | None = None
    task_queue: DramatiqTaskQueue | None = None
    relay: OutboxRelay | None = None
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    # On PostgreSQL, one asyncpg pool beside the engine's for the hot statements (lookups
    # and job transitions share it), created on first use.
    asyncpg_pool: LazyAsyncpgPool | None = None
    # The contract's rate limits (None: off), counted by `rate_limiter`; see api/rate_limits.py.
    rate_limiter: RateLimiter = field(default_factory=UnlimitedRateLimiter)
    write_limit: RateLimit | None = None
    auth_failure_limit: RateLimit | None = None

    def uow(self) -> UnitOfWork:
        wake = self.relay.wake if self.relay is not None else None
        return SqlUnitOfWork(self.engine, on_outbox_commit=wake)

    def read_uow(self) -> UnitOfWork:
        """For services that only read: no transaction around a single statement."""
        return SqlUnitOfWork(self.engine, read_only=True)

    def pipeline_context(self) -> PipelineContext:
        return PipelineContext(
            settings=self.settings,
            uow_factory=self.uow,
            transitions=self.transitions,
            store=self.store,
            cache=self.cache,
            fetcher=ImageFetcher(
                AddressPolicy(
                    allow_private=self.settings.allow_private_networks,
                    allowed_endpoints=self.settings.fetch_allowed_endpoints,
                ),
                max_bytes=self.settings.max_image_bytes,
                timeout=self.settings.fetch_timeout_seconds,
                max_redirects=self.settings.max_redirects,
            ),
            image_executor=ThreadPoolExecutor(
                self.settings.worker_image_concurrency, thread_name_prefix="libvips"
            ),
        )


async def bootstrap(
    settings: Settings,
    *,
    with_broker: bool = False,
    cache: ProductCache | None = None,
    store: ImageStore | None = None,
) -> Services:
    """Build the adapters. `with_broker` adds the broker and the outbox relay (API
    processes); `cache`/`store` let an embedded worker share the API's instances."""
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    services = Services(
        settings=settings,
        engine=engine,
        store=store
        if store is not None
        else build_image_store(settings.storage_url, settings.public_base_url),
        # `is not None`, not `or`: an empty in-memory cache is falsy (it has a __len__).
        cache=cache if cache is not None else _products_cache(settings),
    )
    if engine.dialect.name == "postgresql":
        services.asyncpg_pool = LazyAsyncpgPool(settings.database_url, settings.database_pool_size)
    services.token_cache = build_token_cache(settings.cache_url, _cache_options(settings, "token:"))
    services.lookups = _lookups(services)
    services.transitions = _transitions(services)
    services.readiness = {
        "database": lambda: ping_database(engine),
        "cache": services.cache.ping,
        "storage": services.store.ping,
    }
    _add_rate_limits(services)
    if with_broker:
        services.broker = build_broker_for(settings)
        services.task_queue = DramatiqTaskQueue(services.broker)
        services.relay = OutboxRelay(services.uow, services.task_queue)
        services.readiness["broker"] = services.task_queue.ping
    return services


def _lookups(services: Services) -> Lookups:
    """The hot path's point reads: the asyncpg pool on PostgreSQL (docs/architecture.md),
    the repositories of a read-only unit of work elsewhere."""
    if services.asyncpg_pool is not None:
        return AsyncpgLookups(services.asyncpg_pool)
    return UnitOfWorkLookups(services.read_uow)


def _transitions(services: Services) -> JobTransitions:
    """A job's start and success: one statement each on PostgreSQL (docs/architecture.md),
    a unit of work elsewhere."""
    if services.asyncpg_pool is not None:
        return AsyncpgJobTransitions(services.asyncpg_pool)
    return UnitOfWorkJobTransitions(services.uow)


def _products_cache(settings: Settings) -> ProductCache:
    """The product response cache; with `cache_products` off it serves nothing but still
    invalidates the shared cache (and, through a near-cache, waits for the pub/sub echo),
    so processes that do serve from it stay correct."""
    cache = build_product_cache(settings.cache_url, _cache_options(settings, "product:"))
    return cache if settings.cache_products else WriteOnlyCache(cache)


def _cache_options(settings: Settings, namespace: str) -> CacheOptions:
    return CacheOptions(
        ttl_seconds=settings.cache_ttl_seconds,
        socket_timeout=settings.cache_socket_timeout_seconds,
        breaker_cooldown=settings.cache_breaker_cooldown_seconds,
        key_prefix=settings.cache_key_prefix + namespace,
        near_max_entries=settings.cache_near_max_entries,
    )


def _add_rate_limits(services: Services) -> None:
    """Per-minute budgets from the settings (0 turns one off), counted where the cache is."""
    settings = services.settings
    if settings.rate_limit_writes_per_minute > 0:
        services.write_limit = RateLimit("writes", settings.rate_limit_writes_per_minute)
    if settings.rate_limit_auth_failures_per_minute > 0:
        services.auth_failure_limit = RateLimit(
            "auth-failures", settings.rate_limit_auth_failures_per_minute
        )
    if services.write_limit is not None or services.auth_failure_limit is not None:
        services.rate_limiter = build_rate_limiter(
            settings.cache_url,
            socket_timeout=settings.cache_socket_timeout_seconds,
            breaker_cooldown=settings.cache_breaker_cooldown_seconds,
            key_prefix=settings.cache_key_prefix + "rate-limit",
        )


def build_broker_for(settings: Settings) -> dramatiq.Broker:
    return build_broker(
        settings.broker_url,
        max_retries=settings.job_max_retries,
        min_backoff_ms=settings.job_min_backoff_ms,
        max_backoff_ms=settings.job_max_backoff_ms,
    )


async def shutdown(services: Services, *, close_shared: bool = True) -> None:
    if services.relay is not None:
        await services.relay.stop()
    if services.task_queue is not None:
        await services.task_queue.close()
    if services.token_cache is not None:
        await services.token_cache.close()
    await services.rate_limiter.close()
    if close_shared:
        await services.cache.close()
        await services.store.close()
    if services.asyncpg_pool is not None:
        await services.asyncpg_pool.close()
    await services.engine.dispose()

"""The composition root: `bootstrap(settings, role)` builds what a process of that role
needs, each adapter chosen by the scheme of its URL setting, and nothing else builds a
client. The API lifespan, the worker processes and the CLI all call it."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack

import dramatiq
import structlog

from stockroom.adapters.broker import DramatiqTaskQueue, build_broker
from stockroom.adapters.cache import (
    CacheOptions,
    WriteOnlyCache,
    build_product_cache,
    build_token_cache,
)
from stockroom.adapters.live import LiveOptions, build_live_hub
from stockroom.adapters.rate_limit import UnlimitedRateLimiter, build_rate_limiter
from stockroom.adapters.storage import build_image_store
from stockroom.background import BackgroundTask
from stockroom.config import Settings
from stockroom.db.admissions import AsyncpgAdmissions, UnitOfWorkAdmissions
from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.engine import create_engine
from stockroom.db.health import ping_database
from stockroom.db.job_transitions import AsyncpgJobTransitions, UnitOfWorkJobTransitions
from stockroom.db.lookups import AsyncpgLookups, UnitOfWorkLookups
from stockroom.db.outbox_claims import AsyncpgOutboxClaims, UnitOfWorkOutboxClaims
from stockroom.db.outbox_notify import OutboxListener
from stockroom.db.uow import SqlUnitOfWork
from stockroom.domain import imports, jobs
from stockroom.domain.effects import Effects
from stockroom.domain.live import LiveHub
from stockroom.domain.ports import (
    Admissions,
    ImageStore,
    JobTransitions,
    Lookups,
    OutboxClaims,
    ProductCache,
    RateLimit,
    RateLimiter,
    UnitOfWork,
)
from stockroom.pipeline.address_policy import AddressPolicy
from stockroom.pipeline.fetch import ImageFetcher
from stockroom.pipeline.periodic import Periodic
from stockroom.pipeline.processing import PipelineContext
from stockroom.pipeline.relay import OutboxRelay
from stockroom.pipeline.webhooks import WebhookSender
from stockroom.services import ReadinessCheck, Role, Services

__all__ = ["Role", "Services", "bootstrap", "build_broker_for"]
log = structlog.get_logger("stockroom.bootstrap")

_SERVES_HTTP = (Role.API, Role.EMBEDDED)
_RUNS_JOBS = (Role.WORKER, Role.EMBEDDED)


async def bootstrap(settings: Settings, role: Role) -> Services:
    """Build the services of a `role` process; nothing connects before its first use.
    The caller owns the result and must `aclose()` it."""
    resources = AsyncExitStack()
    try:
        return await _build(settings, role, resources)
    except BaseException:
        await resources.aclose()
        raise


async def _build(settings: Settings, role: Role, resources: AsyncExitStack) -> Services:
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    resources.push_async_callback(engine.dispose)
    # On PostgreSQL, one asyncpg pool beside the engine's for the hot statements, which
    # the lookups and the job transitions share (docs/architecture.md).
    pool: LazyAsyncpgPool | None = None
    if engine.dialect.name == "postgresql":
        pool = LazyAsyncpgPool(settings.database_url, settings.database_pool_size)
        resources.push_async_callback(pool.close)
    store = build_image_store(settings.storage_url, settings.public_base_url)
    resources.push_async_callback(store.close)
    # Only a process that answers reads keeps a near-cache: a worker or a command never
    # reads a product from the cache, and nobody waits on its invalidations' echo.
    near_entries = settings.cache_near_max_entries if role in _SERVES_HTTP else 0
    cache = _products_cache(settings, near_entries)
    resources.push_async_callback(cache.close)
    token_cache = build_token_cache(
        settings.cache_url, _cache_options(settings, "token:", near_entries)
    )
    resources.push_async_callback(token_cache.close)

    live = _live_hub(settings)
    resources.push_async_callback(live.close)
    relay: OutboxRelay | None = None

    def read_uow() -> UnitOfWork:
        return SqlUnitOfWork(engine, read_only=True)

    lookups: Lookups = AsyncpgLookups(pool) if pool is not None else UnitOfWorkLookups(read_uow)
    # What every write's events cause once it commits (domain/effects.py).
    effects = Effects(
        cache=cache,
        token_cache=token_cache,
        store=store,
        live=live,
        uow_factory=read_uow,
        lookups=lookups,
    )

    # A commit that wrote outbox rows wakes the relay: publish now, not at its next poll. In
    # a process without a relay (a worker, a command) it wakes the API processes' relays, on
    # PostgreSQL (db/outbox_notify.py).
    notify_outbox = pool is not None and role not in _SERVES_HTTP

    def wake_relay() -> None:  # the relay is made below, for the roles that have one
        if relay is not None:
            relay.wake()

    def uow() -> UnitOfWork:
        return SqlUnitOfWork(
            engine, on_outbox_commit=wake_relay, effects=effects, notify_outbox=notify_outbox
        )

    admissions: Admissions = (
        AsyncpgAdmissions(pool, wake_relay) if pool is not None else UnitOfWorkAdmissions(uow)
    )
    through_uow = UnitOfWorkJobTransitions(uow)
    transitions: JobTransitions = (
        AsyncpgJobTransitions(pool, through_uow, effects) if pool is not None else through_uow
    )
    readiness: dict[str, ReadinessCheck] = {
        "database": lambda: ping_database(engine),
        "cache": cache.ping,
        "storage": store.ping,
    }
    limiter: RateLimiter = UnlimitedRateLimiter()
    write_limit = auth_failure_limit = None
    broker: dramatiq.Broker | None = None
    chores: list[BackgroundTask] = []
    if role in _SERVES_HTTP:
        write_limit, auth_failure_limit = _rate_limits(settings)
        if write_limit is not None or auth_failure_limit is not None:
            limiter = _rate_limiter(settings)
            resources.push_async_callback(limiter.close)
        broker = build_broker_for(settings)
        task_queue = DramatiqTaskQueue(broker)
        resources.push_async_callback(task_queue.close)
        claims: OutboxClaims = (
            AsyncpgOutboxClaims(pool) if pool is not None else UnitOfWorkOutboxClaims(uow)
        )
        relay = OutboxRelay(claims, task_queue)
        resources.push_async_callback(relay.stop)
        if pool is not None:
            chores.append(OutboxListener(settings.database_url, relay.wake))
            resources.push_async_callback(chores[-1].stop)
        chores.append(
            Periodic(
                "upload-expiry",
                settings.upload_expiry_sweep_seconds,
                lambda: jobs.expire_uploads(uow()),
            )
        )
        resources.push_async_callback(chores[-1].stop)
        chores.append(
            Periodic(
                "import-completion",
                settings.import_sweep_seconds,
                lambda: imports.finish_settled(uow, lookups),
            )
        )
        resources.push_async_callback(chores[-1].stop)
        readiness["broker"] = task_queue.ping
    pipeline: PipelineContext | None = None
    if role in _RUNS_JOBS:
        pipeline = _pipeline(settings, uow, transitions, store, cache)
        resources.push_async_callback(pipeline.aclose)
    return Services(
        settings=settings,
        role=role,
        engine=engine,
        uow=uow,
        read_uow=read_uow,
        store=store,
        cache=cache,
        token_cache=token_cache,
        lookups=lookups,
        transitions=transitions,
        admissions=admissions,
        readiness=readiness,
        rate_limiter=limiter,
        live=live,
        write_limit=write_limit,
        auth_failure_limit=auth_failure_limit,
        broker=broker,
        relay=relay,
        chores=tuple(chores),
        pipeline=pipeline,
        resources=resources,
    )


def _live_hub(settings: Settings) -> LiveHub:
    url = settings.effective_events_url
    if url.startswith("memory:") and not settings.is_embedded_broker:
        log.warning(
            "live.in_process",
            detail="GET /events sees only this process's changes: set STOCKROOM_EVENTS_URL "
            "(or a redis:// cache) when workers run apart",
        )
    return build_live_hub(
        url,
        LiveOptions(
            buffer_size=settings.events_buffer_size,
            socket_timeout=settings.cache_socket_timeout_seconds,
            breaker_cooldown=settings.cache_breaker_cooldown_seconds,
            key_prefix=settings.cache_key_prefix,
        ),
    )


def _pipeline(
    settings: Settings,
    uow: Callable[[], UnitOfWork],
    transitions: JobTransitions,
    store: ImageStore,
    cache: ProductCache,
) -> PipelineContext:
    # Callback URLs obey the rules of image URLs (shared/spec: network rules).
    policy = AddressPolicy(
        allow_private=settings.allow_private_networks,
        allowed_endpoints=settings.fetch_allowed_endpoints,
    )
    webhooks = None
    if settings.webhook_secret is not None:
        webhooks = WebhookSender(
            policy, secret=settings.webhook_secret, timeout=settings.webhook_timeout_seconds
        )
    return PipelineContext(
        settings=settings,
        uow_factory=uow,
        transitions=transitions,
        store=store,
        cache=cache,
        webhooks=webhooks,
        fetcher=ImageFetcher(
            policy,
            max_bytes=settings.max_image_bytes,
            timeout=settings.fetch_timeout_seconds,
            max_redirects=settings.max_redirects,
        ),
        image_executor=ThreadPoolExecutor(
            settings.worker_image_concurrency, thread_name_prefix="libvips"
        ),
    )


def _products_cache(settings: Settings, near_entries: int) -> ProductCache:
    """The product response cache; with `cache_products` off it serves nothing but still
    invalidates the shared cache, so processes that do serve from it stay correct."""
    options = _cache_options(settings, "product:", near_entries)
    cache = build_product_cache(settings.cache_url, options)
    return cache if settings.cache_products else WriteOnlyCache(cache)


def _cache_options(settings: Settings, namespace: str, near_entries: int) -> CacheOptions:
    return CacheOptions(
        ttl_seconds=settings.cache_ttl_seconds,
        socket_timeout=settings.cache_socket_timeout_seconds,
        breaker_cooldown=settings.cache_breaker_cooldown_seconds,
        key_prefix=settings.cache_key_prefix + namespace,
        near_max_entries=near_entries,
    )


def _rate_limits(settings: Settings) -> tuple[RateLimit | None, RateLimit | None]:
    """The per-minute budgets (0 turns one off): writes per user, failed auth per address."""
    writes = settings.rate_limit_writes_per_minute
    failures = settings.rate_limit_auth_failures_per_minute
    return (
        RateLimit("writes", writes) if writes > 0 else None,
        RateLimit("auth-failures", failures) if failures > 0 else None,
    )


def _rate_limiter(settings: Settings) -> RateLimiter:
    """Counted where the cache is, so every API process shares one budget."""
    return build_rate_limiter(
        settings.cache_url,
        socket_timeout=settings.cache_socket_timeout_seconds,
        breaker_cooldown=settings.cache_breaker_cooldown_seconds,
        key_prefix=settings.cache_key_prefix + "rate-limit",
    )


def build_broker_for(settings: Settings, *, event_loop_thread: bool = False) -> dramatiq.Broker:
    return build_broker(
        settings.broker_url,
        max_retries=settings.job_max_retries,
        min_backoff_ms=settings.job_min_backoff_ms,
        max_backoff_ms=settings.job_max_backoff_ms,
        event_loop_thread=event_loop_thread,
    )

"""The FastAPI factory: wires settings, adapters (via bootstrap), routers and middleware."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from stockroom.adapters.storage import FileImageStore
from stockroom.api import (
    admin,
    events,
    health,
    imports,
    job_uploads,
    jobs,
    products,
    users,
    webhooks,
)
from stockroom.api.body_limit import BodySizeLimitMiddleware
from stockroom.api.errors import install_error_handlers
from stockroom.api.forms import MULTIPART_SLACK
from stockroom.api.media import MediaFiles
from stockroom.api.middleware import RequestContextMiddleware
from stockroom.bootstrap import Role, bootstrap
from stockroom.config import Settings, get_settings
from stockroom.domain.image_jobs import requeue_unfinished
from stockroom.domain.imports import requeue_batches
from stockroom.domain.webhook_delivery import requeue_pending
from stockroom.logs import configure_logging
from stockroom.worker import EmbeddedWorker

log = structlog.get_logger("stockroom.app")


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0] if route.tags else 'default'}-{route.name}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(
        settings.effective_log_format, settings.log_level, [settings.webhook_secret or ""]
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        role = Role.EMBEDDED if settings.is_embedded_broker else Role.API
        services = await bootstrap(settings, role)
        app.state.services = services
        # granian waits for open responses before the lifespan ends, and tells them nothing:
        # this ends the event streams at SIGTERM, so a stopping server stops.
        restore_signals = events.end_streams_at_shutdown_signal()
        embedded = EmbeddedWorker(services) if role is Role.EMBEDDED else None
        try:
            if embedded is not None:
                embedded.start()
                requeued = await requeue_unfinished(services.uow())
                # An import's batches not applied yet were in the lost in-memory queue too.
                batches = await requeue_batches(services.uow())
                hooks = await requeue_pending(services.uow())
                log.info(
                    "embedded.started",
                    requeued_jobs=requeued,
                    requeued_batches=batches,
                    requeued_webhooks=hooks,
                )
            assert services.relay is not None
            services.relay.start()
            for chore in services.chores:
                chore.start()
            # What startup built (modules, settings, pools, the app) lives as long as the
            # process; frozen, full garbage collections skip it, which shortens the pauses
            # they impose on requests (and on thousands of open event streams). Garbage is
            # collected first, since frozen objects are never collected; shutdown unfreezes.
            gc.collect()
            gc.freeze()
            yield
        finally:
            gc.unfreeze()
            restore_signals()
            for chore in services.chores:
                await chore.stop()
            if services.relay is not None:
                await services.relay.stop()
            if embedded is not None:
                # Off the event loop: the running jobs need it to finish.
                await asyncio.to_thread(embedded.stop)
            await services.aclose()

    app = FastAPI(
        title="Stockroom",
        version="0.1.0",
        summary="Product catalog with an asynchronous image pipeline",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    # File uploads stream up to the image size limit (and the multipart form around one).
    file_body = settings.max_image_bytes
    app.add_middleware(
        BodySizeLimitMiddleware,
        limits={
            "/jobs/upload": file_body + MULTIPART_SLACK,
            "/upload": file_body + MULTIPART_SLACK,
            "/imports": settings.import_max_bytes + MULTIPART_SLACK,
            "/uploads/": file_body,
        },
    )
    # The client's address behind a trusted proxy (granian does not read forwarded headers).
    trusted = [host.strip() for host in settings.forwarded_allow_ips.split(",") if host.strip()]
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
    app.add_middleware(RequestContextMiddleware)  # added last: outermost, sees every answer
    # Starlette tries routes in order until one matches: the hot one (GET /products/{id})
    # goes first.
    for router in (
        products.router,
        jobs.router,
        job_uploads.router,
        events.router,
        users.router,
        health.router,
        admin.router,
        imports.router,
        webhooks.router,
    ):
        app.include_router(router)
    if settings.storage_url.startswith("file:"):
        root = FileImageStore.from_url(settings.storage_url, settings.public_base_url).root
        app.mount("/media", MediaFiles(directory=root, check_dir=False), name="media")
    return app

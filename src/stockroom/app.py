"""The FastAPI factory: wires settings, adapters (via bootstrap), routers and middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from stockroom.api import health, products, users
from stockroom.api.errors import install_error_handlers
from stockroom.api.middleware import RequestContextMiddleware
from stockroom.bootstrap import bootstrap, shutdown
from stockroom.config import Settings, get_settings
from stockroom.logs import configure_logging


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0] if route.tags else 'default'}-{route.name}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.effective_log_format, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await bootstrap(settings)
        app.state.services = services
        try:
            yield
        finally:
            await shutdown(services)

    app = FastAPI(
        title="Stockroom",
        version="0.1.0",
        summary="Product catalog with an asynchronous image pipeline",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    for router in (health.router, users.router, products.router):
        app.include_router(router)
    return app

"""The composition root: builds every adapter from the settings, by URL scheme, once per
process. The app lifespan, the CLI and the worker all call `bootstrap`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from stockroom.config import Settings
from stockroom.db.engine import create_engine
from stockroom.db.health import ping_database
from stockroom.db.uow import SqlUnitOfWork
from stockroom.domain.ports import ProductCache, UnitOfWork

ReadinessCheck = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    cache: ProductCache | None = None
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)

    def uow(self) -> UnitOfWork:
        return SqlUnitOfWork(self.engine)


async def bootstrap(settings: Settings) -> Services:
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    return Services(
        settings=settings,
        engine=engine,
        readiness={"database": lambda: ping_database(engine)},
    )


async def shutdown(services: Services) -> None:
    if services.cache is not None:
        await services.cache.close()
    await services.engine.dispose()

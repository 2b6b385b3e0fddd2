"""Shared fixtures: databases on both engines, the app over ASGI, users with tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy import text

from stockroom.app import create_app
from stockroom.bootstrap import Role, Services, bootstrap
from stockroom.config import Settings
from stockroom.domain import users
from tests.support.databases import empty_tables_sql, postgres_database, sqlite_database
from tests.support.image_server import ImageServer, serve_images
from tests.support.no_dns import names_unresolvable
from tests.support.services import require
from tests.support.settings import make_settings


@pytest.fixture(autouse=True, scope="session")
def _no_dns() -> Iterator[None]:
    """No name lookups leave the machine (tests/support/no_dns.py)."""
    with names_unresolvable():
        yield


@pytest.fixture(autouse=True)
def _fresh_structlog_config() -> Iterator[None]:
    """Every app a test builds configures structlog globally (a test may set ERROR); later
    tests that capture warnings with `structlog.testing.capture_logs` must not inherit it."""
    yield
    structlog.reset_defaults()


@asynccontextmanager
async def bootstrapped(database_url: str, media: Path) -> AsyncIterator[Services]:
    """The adapters alone, without the app: no embedded worker, no relay."""
    services = await bootstrap(make_settings(database_url, media), Role.CLI)
    try:
        yield services
    finally:
        await services.aclose()


@pytest.fixture
async def pg_services(postgres_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with bootstrapped(postgres_url, tmp_path / "media") as services:
        yield services


@pytest.fixture
async def bare_services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """The adapters without the app, on each engine: no embedded worker or relay touches
    the rows."""
    async with bootstrapped(database_url, tmp_path / "media") as services:
        yield services


@pytest.fixture
def images() -> Iterator[ImageServer]:
    """A local HTTP server of test images (tests/support/image_server.py), on 127.0.0.1."""
    with serve_images() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    require("PostgreSQL", "127.0.0.1", 5432)
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with sqlite_database(tmp_path_factory.mktemp("sqlite")) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every test that takes this runs on both engines."""
    fixture = "postgres_url" if request.param == "postgresql" else "sqlite_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "media")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        services: Services = application.state.services
        async with services.engine.begin() as connection:
            for statement in empty_tables_sql(connection.dialect.name):
                await connection.execute(text(statement))
        yield application


@pytest.fixture
def services(app: FastAPI) -> Services:
    result: Services = app.state.services
    return result


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass(frozen=True)
class Account:
    id: int
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_account(services: Services, email: str, *, admin: bool = False) -> Account:
    user, issued = await users.create_user(services.uow(), email=email, is_admin=admin)
    return Account(id=user.id, email=user.email, token=issued.secret)


@pytest.fixture
async def alice(services: Services) -> Account:
    return await make_account(services, "alice@example.com")


@pytest.fixture
async def bob(services: Services) -> Account:
    return await make_account(services, "bob@example.com")


@pytest.fixture
async def admin(services: Services) -> Account:
    return await make_account(services, "root@example.com", admin=True)

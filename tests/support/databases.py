"""Test databases: one migrated PostgreSQL database per test session (and xdist worker),
one migrated SQLite file, both emptied between tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from stockroom.db.migrate import upgrade
from stockroom.db.tables import metadata
from tests.support.services import POSTGRES_URL

TABLES = [table.name for table in reversed(metadata.sorted_tables)]


def _server_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a uniquely named database on the test server, migrate it, drop it after."""
    name = f"stockroom_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin_dsn = _server_dsn(POSTGRES_URL)

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{folder / 'stockroom.db'}"
    upgrade(url)
    yield url


def empty_tables_sql(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"]
    return [f"DELETE FROM {table}" for table in TABLES]

"""Engines for PostgreSQL (asyncpg) and SQLite (aiosqlite), tuned for each."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

APPLICATION_NAME = "stockroom"  # what pg_stat_activity shows for our connections


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout on the hot path; a dropped
        # connection is detected on use, invalidated, and that request answers 503.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={
            "server_settings": {
                "application_name": APPLICATION_NAME,
                # asyncpg prepares every statement; after five runs PostgreSQL may switch to
                # a generic plan that cannot see the LIKE pattern or the price bound, and
                # picks a slow bitmap plan over an index walk (docs/performance.md).
                "plan_cache_mode": "force_custom_plan",
            }
        },
    )


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """WAL lets readers run beside the one writer; foreign keys are off unless asked for."""
    dbapi_connection.isolation_level = None  # we emit BEGIN IMMEDIATE ourselves
    cursor: Any = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    """Take the write lock up front: a deferred transaction that later writes can fail
    at once with SQLITE_BUSY instead of waiting, when another connection wrote meanwhile."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")

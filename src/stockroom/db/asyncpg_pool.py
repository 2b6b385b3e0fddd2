"""A bare asyncpg pool beside the SQLAlchemy engine, for the few statements on a hot path
(db/lookups.py: the point reads of every GET; db/job_transitions.py: the two writes of every
image job), where SQLAlchemy's execution layers cost more CPU than the statement itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from stockroom.db.engine import APPLICATION_NAME
from stockroom.domain.errors import DatabaseUnavailable

# Connect failures (OSError covers refused connections and TimeoutError), connections lost
# mid-query (PostgresConnectionError: ConnectionDoesNotExistError), a closed pool
# (InterfaceError), and a server refusing or shutting down connections.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release. The default sends `SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL` after every statement: a second round trip each. Our
    statements are single statements that leave nothing in the session (no SET, LISTEN,
    advisory lock or cursor) and asyncpg still rolls back an open transaction itself."""


def asyncpg_dsn(database_url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy's URL) as a DSN asyncpg accepts."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class LazyAsyncpgPool:
    """Created on first use in the running event loop, which it is then bound to."""

    def __init__(self, database_url: str, size: int) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._size = size
        self._pool: Any = None  # asyncpg.Pool once created
        self._lock = asyncio.Lock()

    async def ready(self) -> Any:
        """The pool (an `asyncpg.Pool`); raises DatabaseUnavailable if it cannot connect."""
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                pool = asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._size,
                    server_settings={"application_name": APPLICATION_NAME},
                    reset=_keep_session,
                )
                with _translate_connection_errors():
                    try:
                        await pool
                    except BaseException:
                        pool.terminate()
                        raise
                self._pool = pool
            return self._pool

    async def fetch(self, query: str, *args: object) -> list[Any]:
        """`pool.fetch`, with an unreachable database as DatabaseUnavailable."""
        pool = await self.ready()
        with _translate_connection_errors():
            rows: list[Any] = await pool.fetch(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: object) -> Any:
        """`pool.fetchrow` (a record or None), with an unreachable database as
        DatabaseUnavailable."""
        pool = await self.ready()
        with _translate_connection_errors():
            return await pool.fetchrow(query, *args)

    async def execute(self, query: str, *args: object) -> None:
        """`pool.execute`, with an unreachable database as DatabaseUnavailable."""
        pool = await self.ready()
        with _translate_connection_errors():
            await pool.execute(query, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A connection (an `asyncpg.Connection`) in a transaction, committed when the block
        ends, rolled back if it raises; an unreachable database is DatabaseUnavailable."""
        pool = await self.ready()
        with _translate_connection_errors():
            async with pool.acquire() as connection, connection.transaction():
                yield connection

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


@contextmanager
def _translate_connection_errors() -> Iterator[None]:
    try:
        yield
    except _UNREACHABLE as exc:
        raise DatabaseUnavailable() from exc

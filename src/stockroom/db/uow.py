"""The unit of work: one connection, one transaction, rolled back unless committed."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from stockroom.db.image_jobs import SqlImageJobRepository, SqlOutboxRepository
from stockroom.db.imports import SqlImportRepository
from stockroom.db.outbox_notify import NOTIFY_OUTBOX
from stockroom.db.products import SqlProductRepository
from stockroom.db.users import SqlIdempotencyRepository, SqlTokenRepository, SqlUserRepository
from stockroom.db.webhooks import SqlWebhookRepository
from stockroom.domain.errors import DatabaseUnavailable
from stockroom.domain.events import DomainEvent
from stockroom.domain.ports import RunEffects

log = structlog.get_logger(__name__)


class SqlUnitOfWork:
    users: SqlUserRepository
    tokens: SqlTokenRepository
    products: SqlProductRepository
    idempotency: SqlIdempotencyRepository
    image_jobs: SqlImageJobRepository
    outbox: SqlOutboxRepository
    imports: SqlImportRepository
    webhooks: SqlWebhookRepository

    def __init__(
        self,
        engine: AsyncEngine,
        on_outbox_commit: Callable[[], None] | None = None,
        *,
        read_only: bool = False,
        effects: RunEffects | None = None,
        notify_outbox: bool = False,
    ) -> None:
        self._engine = engine
        self._read_only = read_only
        # PostgreSQL: a commit that wrote outbox rows wakes the API processes' relays
        # (db/outbox_notify.py); for processes without a relay of their own.
        self._notify_outbox = notify_outbox
        self._on_outbox_commit = on_outbox_commit
        self._effects = effects
        self._events: list[DomainEvent] = []
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        try:
            self._conn = await self._engine.connect()
            if self._read_only and self._conn.dialect.name == "postgresql":
                # One statement needs no BEGIN/ROLLBACK around it: two round trips saved on
                # every read (SQLite keeps its BEGIN IMMEDIATE; it has no round trips).
                await self._conn.execution_options(isolation_level="AUTOCOMMIT")
            self._tx = await self._conn.begin()
        except (OperationalError, InterfaceError, OSError) as exc:
            if self._conn is not None:
                await self._conn.close()
            raise DatabaseUnavailable() from exc
        self._events = []
        self.users = SqlUserRepository(self._conn)
        self.tokens = SqlTokenRepository(self._conn)
        self.products = SqlProductRepository(self._conn)
        self.idempotency = SqlIdempotencyRepository(self._conn)
        self.image_jobs = SqlImageJobRepository(self._conn)
        self.outbox = SqlOutboxRepository(self._conn)
        self.imports = SqlImportRepository(self._conn)
        self.webhooks = SqlWebhookRepository(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        assert self._tx is not None
        try:
            if self._tx.is_active:
                await self._tx.rollback()
        finally:
            await self._conn.close()
            self._conn = self._tx = None
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise DatabaseUnavailable() from exc

    async def commit(self) -> None:
        assert self._tx is not None
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        if self.outbox.added and self._notify_outbox:
            assert self._conn is not None
            await self._conn.exec_driver_sql(NOTIFY_OUTBOX)  # delivered on commit
        await self._tx.commit()
        if self.outbox.added and self._on_outbox_commit is not None:
            self._on_outbox_commit()  # wake the relay: publish now, not at its next poll
        events, self._events = self._events, []
        if events and self._effects is not None:
            await self._effects(events)

    def record(self, event: DomainEvent) -> None:
        self._events.append(event)

"""Alembic environment: the same tables on PostgreSQL and SQLite, safe to run from N
instances at once (an advisory lock serialises them on PostgreSQL)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, text

from stockroom.db.engine import create_engine
from stockroom.db.tables import metadata

MIGRATION_LOCK_ID = 0x5_70C_500  # any constant shared by every instance of Stockroom


def _run(connection: Connection) -> None:
    postgres = connection.dialect.name == "postgresql"
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
        render_as_batch=not postgres,
        transaction_per_migration=postgres,
    )
    if postgres:
        connection.execute(text("SET lock_timeout = '10s'"))
        connection.execute(text("SET statement_timeout = '300s'"))
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if postgres:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()


async def _run_async(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


url = context.config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("set sqlalchemy.url (stockroom migrate does it from the settings)")
asyncio.run(_run_async(url))

"""Readiness probe of the database."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from stockroom.domain.errors import DatabaseUnavailable


async def ping_database(engine: AsyncEngine, within: float = 2.0) -> None:
    try:
        async with asyncio.timeout(within), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise DatabaseUnavailable() from exc

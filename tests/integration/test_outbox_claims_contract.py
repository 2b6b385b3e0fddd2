"""The relay's claims: `AsyncpgOutboxClaims` (one transaction on the bare asyncpg pool)
claims, skips and marks exactly what the unit-of-work implementation does, on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from tests.support.services import free_port

from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.outbox_claims import AsyncpgOutboxClaims, UnitOfWorkOutboxClaims
from stockroom.db.tables import outbox
from stockroom.domain.errors import DatabaseUnavailable
from stockroom.domain.ports import OutboxClaims
from stockroom.services import Services

pytestmark = pytest.mark.postgres


async def queue(services: Services, count: int, *, later: int = 0) -> list[str]:
    """`count` messages due now and `later` due in an hour; the job ids, in order."""
    due = [uuid.uuid4().hex for _ in range(count)]
    async with services.uow() as uow:
        await uow.outbox.add_many(due, "process_image", "images", "req-1")
        for _ in range(later):
            await uow.outbox.add(
                uuid.uuid4().hex,
                "deliver_webhook",
                "webhooks",
                None,
                not_before=datetime.now(UTC) + timedelta(hours=1),
            )
        await uow.commit()
    return due


async def published(services: Services) -> dict[str, bool]:
    async with services.engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.job_id, outbox.c.published_at))
        return {row.job_id: row.published_at is not None for row in rows}


async def play(services: Services, claims: OutboxClaims) -> list[object]:
    """What a relay meets: a batch, a partial publish, a failure, two relays at once."""
    async with services.engine.begin() as conn:
        await conn.execute(delete(outbox))
    jobs = await queue(services, 5, later=1)
    seen: list[object] = []
    async with claims.claim(2) as batch:  # the oldest two; the first is published
        seen.append([m.job_id for m in batch.messages] == jobs[:2])
        seen.append(batch.messages[0].request_id)
        batch.published.append(batch.messages[0].id)

    async def fail_after_publishing_all() -> None:
        async with claims.claim(10) as batch:
            batch.published.extend(m.id for m in batch.messages)
            raise RuntimeError

    with pytest.raises(RuntimeError):  # a failure inside: nothing is marked
        await fail_after_publishing_all()
    async with claims.claim(10) as first, claims.claim(10) as second:  # two relays
        seen.append(sorted(m.job_id for m in first.messages) == sorted(jobs[1:]))
        seen.append(second.messages)  # all locked by the first: skipped, not waited for
        first.published.extend(m.id for m in first.messages[:2])
    state = await published(services)
    seen.append([state[job] for job in jobs])
    seen.append(sum(1 for job, done in state.items() if job not in jobs and not done))
    return seen


async def test_asyncpg_claims_do_what_the_unit_of_work_does(
    pg_services: Services, postgres_url: str
) -> None:
    expected = await play(pg_services, UnitOfWorkOutboxClaims(pg_services.uow))
    pool = LazyAsyncpgPool(postgres_url, 3)
    try:
        got = await asyncio.wait_for(play(pg_services, AsyncpgOutboxClaims(pool)), 30)
    finally:
        await pool.close()
    assert got == expected
    assert expected == [True, "req-1", True, [], [True, True, True, False, False], 1]


async def test_an_unreachable_database_is_database_unavailable() -> None:
    pool = LazyAsyncpgPool(f"postgresql://postgres@127.0.0.1:{free_port()}/test", 2)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with AsyncpgOutboxClaims(pool).claim(10):
                pass
    finally:
        await pool.close()

"""The relay's claim on a batch of outbox rows (`OutboxClaims`): on PostgreSQL, one
transaction on the bare asyncpg pool; elsewhere (SQLite, the unit tests' fakes) through a
unit of work's outbox repository.

The relay runs a claim for every commit that wrote outbox rows, so for every product or job
accepted: through the unit of work, its four statements cost the API about as much CPU as the
request that wrote the rows. The SQL here is the repository's, written by hand;
tests/integration/test_outbox_claims_contract.py holds the two to the same results.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.domain.models import OutboxMessage
from stockroom.domain.ports import ClaimedBatch, UnitOfWorkFactory

# $1 limit, $2 now. Rows other relays hold are skipped, not waited for.
_CLAIM = """
SELECT id, job_id, actor, queue, request_id FROM outbox
WHERE published_at IS NULL AND (not_before IS NULL OR not_before <= $2)
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
_MARK = "UPDATE outbox SET published_at = $2 WHERE id = ANY($1::bigint[])"


class AsyncpgOutboxClaims:
    def __init__(self, pool: LazyAsyncpgPool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[ClaimedBatch]:
        async with self._pool.transaction() as connection:
            rows = await connection.fetch(_CLAIM, limit, datetime.now(UTC))
            batch = ClaimedBatch([OutboxMessage(**dict(row)) for row in rows])
            yield batch
            if batch.published:
                await connection.execute(_MARK, batch.published, datetime.now(UTC))


class UnitOfWorkOutboxClaims:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[ClaimedBatch]:
        async with self._uow_factory() as uow:
            batch = ClaimedBatch(await uow.outbox.claim(limit))
            yield batch
            await uow.outbox.mark_published(batch.published)
            await uow.commit()

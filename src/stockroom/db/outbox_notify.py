"""Waking the API's outbox relays when another process commits outbox rows (PostgreSQL).

A commit in an API process wakes that process's relay directly. Rows a worker or a command
commits (a CSV import's batch of products and their image jobs, a webhook to deliver, a
redrive) waited for a relay's next poll, a second at most, during which nothing else may
be queued: an import's images started up to a second late. Such a commit now sends
`NOTIFY stockroom_outbox` in its transaction (PostgreSQL delivers it on commit, not before);
every API process LISTENs on a connection of its own and wakes its relay. The poll stays:
a listener that lost its connection (and is reconnecting) only makes the relay as slow as
it was before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from stockroom.background import cancel_requested, stop_task
from stockroom.db.asyncpg_pool import asyncpg_dsn

OUTBOX_CHANNEL = "stockroom_outbox"
NOTIFY_OUTBOX = f"SELECT pg_notify('{OUTBOX_CHANNEL}', '')"
LISTENER_APPLICATION_NAME = "stockroom-outbox-listener"  # in pg_stat_activity

log = structlog.get_logger("stockroom.relay")


class OutboxListener:
    """Calls `wake` on every `NOTIFY stockroom_outbox`, and once on each (re)connection,
    for rows committed while it was not listening."""

    def __init__(
        self, database_url: str, wake: Callable[[], None], *, retry_seconds: float = 2.0
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._wake = wake
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while not cancel_requested():
            try:
                await self._listen_until_lost()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox.listen_failed", error=str(exc), retry_in_s=self._retry)
            await asyncio.sleep(self._retry)

    async def _listen_until_lost(self) -> None:
        connection = await asyncpg.connect(
            self._dsn,
            timeout=10,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        lost = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(OUTBOX_CHANNEL, self._notified)
            self._wake()
            await lost.wait()
            log.warning("outbox.listen_lost", retry_in_s=self._retry)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await connection.close()

    def _notified(self, *_args: object) -> None:
        self._wake()

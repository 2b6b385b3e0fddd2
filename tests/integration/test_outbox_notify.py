"""Outbox rows committed by a process without a relay (a worker, a command) wake the API
processes' relays through NOTIFY, on PostgreSQL; a listener that loses its connection
reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from tests.support.settings import make_settings
from tests.support.waiting import eventually

from stockroom.bootstrap import Role, bootstrap
from stockroom.db.asyncpg_pool import asyncpg_dsn
from stockroom.db.outbox_notify import LISTENER_APPLICATION_NAME, OutboxListener
from stockroom.db.uow import SqlUnitOfWork
from stockroom.pipeline.relay import OutboxRelay
from stockroom.services import Services

pytestmark = pytest.mark.postgres


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def queue_one(services: Services) -> None:
    async with services.uow() as uow:
        await uow.outbox.add_many([uuid.uuid4().hex], "process_image", "images", None)
        await uow.commit()


async def settled(wakes: Wakes, seconds: float = 0.3) -> int:
    """The count once no wake has come for `seconds`."""
    while True:
        before = wakes.count
        await asyncio.sleep(seconds)
        if wakes.count == before:
            return before


@contextlib.asynccontextmanager
async def listening(postgres_url: str) -> AsyncIterator[Wakes]:
    """A listener that retries quickly, once it is listening (it wakes once on connect)."""
    wakes = Wakes()
    listener = OutboxListener(postgres_url, wakes, retry_seconds=0.1)
    listener.start()
    try:
        await eventually(lambda: _at_least(wakes, 1))
        yield wakes
    finally:
        await listener.stop()


async def test_a_commit_with_outbox_rows_elsewhere_wakes_the_relay(
    pg_services: Services, postgres_url: str
) -> None:
    async with listening(postgres_url) as wakes:
        before = await settled(wakes)

        await queue_one(pg_services)  # a CLI-role unit of work: it notifies
        await eventually(lambda: _at_least(wakes, before + 1), timeout=5)

        quiet = await settled(wakes)
        async with SqlUnitOfWork(pg_services.engine, notify_outbox=True) as uow:
            await uow.commit()  # nothing written to the outbox: no notification
        silent = SqlUnitOfWork(pg_services.engine)  # an API process's: its own relay wakes
        async with silent as uow:
            await uow.outbox.add_many([uuid.uuid4().hex], "process_image", "images", None)
            await uow.commit()
        assert await settled(wakes, 0.5) == quiet


async def test_the_listener_reconnects_when_its_connection_is_killed(
    pg_services: Services, postgres_url: str
) -> None:
    async with listening(postgres_url) as wakes:
        admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                LISTENER_APPLICATION_NAME,
            )
        finally:
            await admin.close()
        assert killed == 1

        await eventually(lambda: _at_least(wakes, 2), timeout=10)  # reconnected
        before = await settled(wakes)
        await queue_one(pg_services)
        await eventually(lambda: _at_least(wakes, before + 1), timeout=5)


async def test_api_processes_listen_and_other_processes_notify(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    woken = Wakes()
    monkeypatch.setattr(OutboxRelay, "wake", lambda _relay: woken())
    settings = make_settings(postgres_url, tmp_path / "media")
    api = await bootstrap(settings, Role.API)
    worker = await bootstrap(settings, Role.WORKER)
    try:
        assert any(isinstance(chore, OutboxListener) for chore in api.chores)
        assert worker.chores == ()
        for chore in api.chores:
            chore.start()
        await eventually(lambda: _at_least(woken, 1))
        before = await settled(woken)

        await queue_one(worker)

        await eventually(lambda: _at_least(woken, before + 1), timeout=5)
    finally:
        await api.aclose()
        await worker.aclose()


async def _at_least(wakes: Wakes, count: int) -> bool:
    return wakes.count >= count

"""The fakes keep the promises of the ports they stand in for."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stockroom.domain.ports import ProductCache, UnitOfWork, UnitOfWorkFactory
from stockroom.domain.queries import NewProduct
from tests.unit.fakes import FakeDatabase, RecordingCache


def test_fakes_satisfy_the_ports() -> None:
    db = FakeDatabase()
    # Checked by mypy --strict: a drifting Protocol breaks these assignments.
    uow: UnitOfWork = db.uow()
    factory: UnitOfWorkFactory = db.uow
    cache: ProductCache = RecordingCache(db)

    assert uow is not factory()
    assert cache is not None


async def test_changes_are_visible_only_after_commit() -> None:
    db = FakeDatabase()
    calls: list[str] = []

    async def note() -> None:
        calls.append("ran")

    async with db.uow() as uow:
        await uow.users.add("a@example.com", None, is_admin=False)
        uow.after_commit(note)
        assert db.tables.users == {}
        assert calls == []
        await uow.commit()

    assert [u.email for u in db.tables.users.values()] == ["a@example.com"]
    assert calls == ["ran"]


async def test_without_commit_changes_and_callbacks_are_dropped() -> None:
    db = FakeDatabase()
    calls: list[str] = []

    async def note() -> None:
        calls.append("ran")

    async def fail_midway() -> None:
        async with db.uow() as uow:
            await uow.products.add(NewProduct("Lamp", Decimal(1)), 1)
            uow.after_commit(note)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_midway()
    async with db.uow() as uow:
        await uow.users.add("b@example.com", None, is_admin=False)

    assert db.tables.products == {}
    assert db.tables.users == {}
    assert calls == []

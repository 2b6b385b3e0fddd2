"""The fakes keep the promises of the ports they stand in for."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from stockroom.domain.events import DomainEvent, ProductChanged
from stockroom.domain.ports import (
    IdempotencyRepository,
    ImageJobRepository,
    OutboxRepository,
    ProductCache,
    ProductRepository,
    TokenRepository,
    UnitOfWork,
    UnitOfWorkFactory,
    UserRepository,
)
from stockroom.domain.queries import NewProduct
from tests.unit.fakes import FakeDatabase, RecordingCache


def test_fakes_satisfy_the_ports() -> None:
    db = FakeDatabase()
    # Checked by mypy --strict: a drifting Protocol breaks these assignments.
    uow: UnitOfWork = db.uow()
    factory: UnitOfWorkFactory = db.uow
    _cache: ProductCache = RecordingCache(db)

    # At run time: the repositories, parameter by parameter (below); a new unit of work a call.
    assert uow is not factory()


@pytest.mark.parametrize(
    ("port", "attribute"),
    [
        (UserRepository, "users"),
        (TokenRepository, "tokens"),
        (ProductRepository, "products"),
        (IdempotencyRepository, "idempotency"),
        (ImageJobRepository, "image_jobs"),
        (OutboxRepository, "outbox"),
    ],
)
async def test_fake_repositories_take_what_the_ports_take(port: type, attribute: str) -> None:
    """mypy accepts extra defaulted parameters and renamed positional ones; a caller
    passing a port's keyword arguments to the fake would not."""
    async with FakeDatabase().uow() as uow:
        assert_same_methods(port, getattr(uow, attribute))


def assert_same_methods(port: type, fake: object) -> None:
    methods = [name for name in vars(port) if not name.startswith("_")]
    assert methods
    for name in methods:
        expected = _parameters(getattr(port, name), drop_self=True)
        assert _parameters(getattr(fake, name), drop_self=False) == expected, name


def _parameters(function: Any, *, drop_self: bool) -> list[tuple[str, Any, Any]]:
    parameters = list(inspect.signature(function).parameters.values())
    return [(p.name, p.kind, p.default) for p in parameters[1 if drop_self else 0 :]]


async def test_changes_are_visible_only_after_commit() -> None:
    db = FakeDatabase()
    seen: list[tuple[list[DomainEvent], int]] = []

    async def effects(events: Sequence[DomainEvent]) -> None:
        seen.append((list(events), len(db.tables.users)))

    db.effects = effects
    async with db.uow() as uow:
        await uow.users.add("a@example.com", None, is_admin=False)
        uow.record(ProductChanged(1))
        assert db.tables.users == {}
        assert seen == []
        await uow.commit()

    assert [u.email for u in db.tables.users.values()] == ["a@example.com"]
    assert seen == [([ProductChanged(1)], 1)]  # run once the change was visible
    assert db.events == [ProductChanged(1)]


async def test_without_commit_changes_and_events_are_dropped() -> None:
    db = FakeDatabase()

    async def fail_midway() -> None:
        async with db.uow() as uow:
            await uow.products.add(NewProduct("Lamp", Decimal(1)), 1)
            uow.record(ProductChanged(1))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_midway()
    async with db.uow() as uow:
        await uow.users.add("b@example.com", None, is_admin=False)

    assert db.tables.products == {}
    assert db.tables.users == {}
    assert db.events == []

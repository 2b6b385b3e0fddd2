"""The hot-path point reads through the repositories of a unit of work: the embedded
(SQLite) implementation of `Lookups`, and the one unit tests use over their fakes."""

from __future__ import annotations

from stockroom.domain.models import Product, User
from stockroom.domain.ports import UnitOfWorkFactory


class UnitOfWorkLookups:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def product(self, product_id: int) -> Product | None:
        async with self._uow_factory() as uow:
            return await uow.products.get(product_id)

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        async with self._uow_factory() as uow:
            return await uow.users.by_token_hash(token_hash)

    async def close(self) -> None:
        return None

"""GET /products/{id}'s read path over the `Lookups` port: on a miss it authorises exactly
like the unit-of-work services (404, never 403; admins see everything)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stockroom.domain import products
from stockroom.domain.errors import ProductNotFound
from stockroom.domain.models import Product, User
from stockroom.domain.product_reads import read_product
from stockroom.domain.queries import NewProduct
from tests.unit.fakes import FakeDatabase, RecordingCache


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


async def make_user(db: FakeDatabase, email: str, *, admin: bool = False) -> User:
    async with db.uow() as uow:
        user = await uow.users.add(email, None, admin)
        await uow.commit()
    return user


async def read(db: FakeDatabase, actor: User, product_id: int) -> bytes:
    found = await read_product(
        db.lookups(), RecordingCache(db), actor, product_id, lambda p: str(p.id).encode()
    )
    assert not found.cached
    return found.body


async def lamp(db: FakeDatabase, owner: User) -> Product:
    draft = NewProduct(product_name="Lamp", product_price=Decimal("5"), product_images=("u",))
    product = (await products.create_product(db.uow(), db.admissions(), owner, draft)).product
    assert product is not None
    return product


async def test_the_owner_and_an_admin_read_the_product(db: FakeDatabase) -> None:
    alice = await make_user(db, "alice@example.com")
    root = await make_user(db, "root@example.com", admin=True)
    product = await lamp(db, alice)

    assert await read(db, alice, product.id) == str(product.id).encode()
    assert await read(db, root, product.id) == str(product.id).encode()


async def test_someone_elses_or_a_missing_product_is_not_found(db: FakeDatabase) -> None:
    alice = await make_user(db, "alice@example.com")
    bob = await make_user(db, "bob@example.com")
    product = await lamp(db, alice)

    with pytest.raises(ProductNotFound):
        await read(db, bob, product.id)
    with pytest.raises(ProductNotFound):
        await read(db, alice, product.id + 1000)

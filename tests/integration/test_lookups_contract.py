"""The hot-path point reads: `AsyncpgLookups` (hand-written SQL on a bare asyncpg pool)
returns exactly what the SQLAlchemy repositories return, and a database it cannot reach
is DatabaseUnavailable (a 503), never a 500."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tests.conftest import Account, bootstrapped
from tests.support.products import new_product
from tests.support.services import free_port

from stockroom.db.asyncpg_pool import LazyAsyncpgPool, asyncpg_dsn
from stockroom.db.lookups import AsyncpgLookups, UnitOfWorkLookups
from stockroom.domain import users
from stockroom.domain.errors import DatabaseUnavailable
from stockroom.domain.models import (
    ImageResult,
    ImageStatus,
    Import,
    ImportStatus,
    Product,
    User,
)
from stockroom.domain.queries import NewProduct
from stockroom.services import Services

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """PostgreSQL only (overrides conftest's both-engines fixture for the API tests here)."""
    return postgres_url


def unreachable_pool() -> LazyAsyncpgPool:
    return LazyAsyncpgPool(f"postgresql://postgres@127.0.0.1:{free_port()}/test", 2)


async def catalogue(services: Services) -> tuple[User, str, Product, Product]:
    """A user with a token, a product whose images are in every state, and one without."""
    user, issued = await users.create_user(
        services.uow(), email=f"lookups-{id(services)}@example.com", name="Lookups"
    )
    urls = tuple(f"https://img.example.com/{n}.jpg" for n in range(5))
    draft = NewProduct(
        product_name="Café lamp",
        product_price=Decimal("1234.50"),
        product_description="Lit\nwith ünïcode",
        product_images=urls,
        sku="LAMP-1",
    )
    with_images = await new_product(services.uow(), user, draft)
    bare_draft = NewProduct(product_name="Bare", product_price=Decimal("0.10"))
    bare = await new_product(services.uow(), user, bare_draft)
    _queued, processing, ready, failed, tied = (image.id for image in with_images.images)
    async with services.uow() as uow:
        await uow.products.set_image_status(processing, ImageStatus.PROCESSING)
        result = ImageResult("out/ab.jpg", "http://testserver/media/out/ab.jpg", 640, 480, 9, 3)
        await uow.products.record_image_result(ready, result)
        await uow.products.record_image_failure(failed, "HTTP 404 from source", "http_4xx")
        # Two images at one position: the order falls back to the image id.
        await uow.products.move_images([(tied, 1)])
        await uow.commit()
    return user, users.hash_token(issued.secret), with_images, bare


async def test_asyncpg_lookups_equal_the_unit_of_work_ones(pg_services: Services) -> None:
    fast = pg_services.lookups
    reference = UnitOfWorkLookups(pg_services.read_uow)
    assert isinstance(fast, AsyncpgLookups)
    user, token_hash, with_images, bare = await catalogue(pg_services)

    for product_id in (with_images.id, bare.id, bare.id + 1000):
        assert await fast.product(product_id) == await reference.product(product_id)
    for digest in (token_hash, users.hash_token("sr_unknown")):
        assert await fast.user_by_token_hash(digest) == await reference.user_by_token_hash(digest)
    for image in with_images.images:
        found = await fast.image(with_images.id, image.id)
        assert found == await reference.image(with_images.id, image.id)
        assert found is not None
        assert found.user_id == user.id
    assert await fast.image(bare.id, with_images.images[0].id) is None  # not that product's
    assert await reference.image(bare.id, with_images.images[0].id) is None
    async with pg_services.uow() as uow:
        (job,) = await uow.image_jobs.search(user_id=user.id, limit=1)
    assert await fast.job(job.id) == await reference.job(job.id) == job
    assert await fast.job("0" * 32) is None

    product = await fast.product(with_images.id)
    assert product is not None
    assert product.product_price == Decimal("1234.50")
    assert product.created_at.utcoffset() == UTC.utcoffset(None)
    assert [(image.position, image.status) for image in product.images] == [
        (0, ImageStatus.PENDING),
        (1, ImageStatus.PROCESSING),
        (1, ImageStatus.PENDING),
        (2, ImageStatus.READY),
        (3, ImageStatus.FAILED),
    ]
    assert product.images[1].id < product.images[2].id  # the tie, by id
    assert product.images[3].width == 640
    assert product.images[4].error_code == "http_4xx"
    assert await fast.product(bare.id + 1000) is None
    assert await fast.user_by_token_hash(token_hash) == user
    assert await fast.user_by_token_hash(users.hash_token("sr_unknown")) is None


async def test_asyncpg_finds_the_same_settling_imports_as_the_unit_of_work(
    pg_services: Services,
) -> None:
    """Processing with every batch applied (here: none to apply) is settling; processing
    with batches left, or already finished, is not."""
    user, _issued = await users.create_user(
        pg_services.uow(), email=f"settling-{id(pg_services)}@example.com", name="Settling"
    )
    shapes = {
        "settling": (ImportStatus.PROCESSING, 0),
        "batches-left": (ImportStatus.PROCESSING, 2),
        "finished": (ImportStatus.COMPLETED, 0),
        "pending": (ImportStatus.PENDING, 1),
    }
    ids = {name: uuid.uuid4().hex for name in shapes}
    async with pg_services.uow() as uow:
        for name, (status, batches) in shapes.items():
            draft = Import(
                id=ids[name], user_id=user.id, status=status, columns=("sku",), rows=batches,
                images_total=0, batches=batches, created_at=datetime.now(UTC),
            )  # fmt: skip
            await uow.imports.add(draft)
        await uow.commit()
    fast = pg_services.lookups
    assert isinstance(fast, AsyncpgLookups)

    found = await fast.settling_imports()

    assert sorted(found) == sorted(await UnitOfWorkLookups(pg_services.read_uow).settling_imports())
    mine = {name for name, import_id in ids.items() if import_id in found}
    assert mine == {"settling"}


async def test_sqlite_reads_through_the_unit_of_work(sqlite_url: str, tmp_path: Path) -> None:
    async with bootstrapped(sqlite_url, tmp_path / "media") as services:
        assert isinstance(services.lookups, UnitOfWorkLookups)


def test_the_dsn_is_the_sqlalchemy_url_with_its_password() -> None:
    url = "postgresql+asyncpg://app:s%40cret@db.internal:6432/stock?ssl=require"

    assert asyncpg_dsn(url) == "postgresql://app:s%40cret@db.internal:6432/stock?ssl=require"


async def test_an_unreachable_database_is_database_unavailable() -> None:
    pool = unreachable_pool()
    lookups = AsyncpgLookups(pool)
    try:
        with pytest.raises(DatabaseUnavailable):
            await lookups.product(1)
        with pytest.raises(DatabaseUnavailable):  # tried again, not stuck on a broken pool
            await lookups.user_by_token_hash("0" * 64)
    finally:
        await pool.close()


async def test_the_api_answers_503_when_the_lookups_cannot_reach_the_database(
    client: httpx.AsyncClient, app: FastAPI, services: Services, alice: Account, bob: Account
) -> None:
    created = await client.post(
        "/products", json={"product_name": "Lamp", "product_price": "5"}, headers=alice.headers
    )
    assert created.status_code == 201
    pool = unreachable_pool()
    app.state.services = dataclasses.replace(services, lookups=AsyncpgLookups(pool))
    try:
        product = await client.get(f"/products/{created.json()['id']}", headers=alice.headers)
        token = await client.get("/products/1", headers=bob.headers)  # bob's token: not cached
    finally:
        await pool.close()
        app.state.services = services

    for response in (product, token):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/database_unavailable")

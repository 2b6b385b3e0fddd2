"""One contract for the repositories behind the unit of work: the same assertions on the
in-memory fakes the unit tests use (tests/unit/fakes.py) and on the SQL repositories, on
SQLite and on PostgreSQL. Where they disagree, the unit tests would be testing against a
database that does not exist. Every row is made through the repositories themselves."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests.conftest import bootstrapped
from tests.support.databases import empty_tables_sql
from tests.unit.fakes import FakeDatabase

from stockroom.domain.errors import EmailTaken, IdempotentRequestInFlight, InvalidInput, SkuTaken
from stockroom.domain.models import (
    ImageJob,
    ImageResult,
    ImageStatus,
    JobKind,
    JobStatus,
    OutboxMessage,
    Product,
    User,
)
from stockroom.domain.ports import UnitOfWorkFactory
from stockroom.domain.products import sort_cursor
from stockroom.domain.queries import (
    IdempotencyRecord,
    NewProduct,
    ProductPatch,
    ProductQuery,
    ProductSort,
)

MISSING = 999_999_999
RESULT = ImageResult("ab/cd.jpg", "http://testserver/media/ab/cd.jpg", 640, 480, 9_000, 3_000)
T0 = datetime(2020, 1, 1, tzinfo=UTC)
_names = itertools.count()


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The database URL for an engine, or None for the fakes (requested here, outside the
    event loop: making a session database migrates it with its own loop)."""
    if request.param == "fake":
        return None
    url: str = request.getfixturevalue(
        "postgres_url" if request.param == "postgresql" else "sqlite_url"
    )
    return url


@pytest.fixture
async def uows(backend: str | None, tmp_path: Path) -> AsyncIterator[UnitOfWorkFactory]:
    """A unit-of-work factory over empty tables: the fakes', or `Services.uow` on an engine."""
    if backend is None:
        yield FakeDatabase().uow
        return
    async with bootstrapped(backend, tmp_path / "media") as services:
        async with services.engine.begin() as connection:
            for statement in empty_tables_sql(connection.dialect.name):
                await connection.execute(text(statement))
        yield services.uow


# --- building rows through the repositories -------------------------------------------------


async def add_user(uows: UnitOfWorkFactory, *, admin: bool = False) -> User:
    name = f"user{next(_names)}"
    async with uows() as uow:
        user = await uow.users.add(f"{name}@example.com", name, admin)
        await uow.commit()
    return user


async def add_product(
    uows: UnitOfWorkFactory,
    user: User,
    name: str = "lamp",
    price: str = "9.99",
    *,
    sku: str | None = None,
    description: str | None = None,
    images: tuple[str, ...] = (),
) -> Product:
    draft = NewProduct(
        product_name=name, product_price=Decimal(price), product_description=description, sku=sku
    )
    async with uows() as uow:
        product_id = (await uow.products.add(draft, user.id)).id
        await uow.products.add_images(product_id, list(enumerate(images)))
        await uow.commit()
    return await get_product(uows, product_id)


async def get_product(uows: UnitOfWorkFactory, product_id: int) -> Product:
    async with uows() as uow:
        product = await uow.products.get(product_id)
    assert product is not None, f"product {product_id} is gone"
    return product


def new_job(
    user: User,
    *,
    created_at: datetime,
    image: tuple[int, int] | None = None,  # (product id, image id)
    kind: JobKind = JobKind.PRODUCT_IMAGE,
) -> ImageJob:
    return ImageJob(
        id=f"job{next(_names):06d}",
        user_id=user.id,
        kind=kind if image is None else JobKind.PRODUCT_IMAGE,
        status=JobStatus.QUEUED,
        queue="images",
        operations=[{"op": "resize", "width": 10, "height": 20}],
        created_at=created_at,
        product_id=image[0] if image else None,
        product_image_id=image[1] if image else None,
        source_url="https://img.example.com/a.jpg",
        request_id="req-1",
    )


async def add_jobs(uows: UnitOfWorkFactory, *jobs: ImageJob) -> None:
    async with uows() as uow:
        await uow.image_jobs.add_many(jobs)
        await uow.commit()


async def get_job(uows: UnitOfWorkFactory, job_id: str) -> ImageJob:
    async with uows() as uow:
        job = await uow.image_jobs.get(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


# --- users and tokens ------------------------------------------------------------------------


async def test_a_user_is_found_by_id_email_and_token_hash(uows: UnitOfWorkFactory) -> None:
    async with uows() as uow:
        user = await uow.users.add("ada@example.com", "Ada", True)
        await uow.tokens.add(user.id, "a" * 64, "cli")
        await uow.commit()
    other = await add_user(uows)

    assert (user.email, user.name, user.is_admin) == ("ada@example.com", "Ada", True)
    assert user.created_at.tzinfo is not None
    async with uows() as uow:
        assert await uow.users.get(user.id) == user
        assert await uow.users.by_email("ada@example.com") == user
        assert await uow.users.by_token_hash("a" * 64) == user
        assert await uow.users.exists(user.id)
        assert await uow.users.exists(other.id)
        assert await uow.users.get(MISSING) is None
        assert await uow.users.by_email("nobody@example.com") is None
        assert await uow.users.by_token_hash("b" * 64) is None
        assert not await uow.users.exists(MISSING)


async def test_a_taken_email_is_refused_and_nothing_is_added(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    with pytest.raises(EmailTaken):
        async with uows() as uow:
            await uow.users.add(user.email, "Twin", False)
    async with uows() as uow:
        assert await uow.users.by_email(user.email) == user


async def test_a_rolled_back_unit_of_work_leaves_no_rows(uows: UnitOfWorkFactory) -> None:
    async with uows() as uow:
        user = await uow.users.add("gone@example.com", None, False)  # no commit
    async with uows() as uow:
        assert await uow.users.get(user.id) is None
        assert await uow.users.by_email("gone@example.com") is None


async def test_a_token_is_deleted_by_its_owner_only(uows: UnitOfWorkFactory) -> None:
    alice, bob = await add_user(uows), await add_user(uows)
    async with uows() as uow:
        token = await uow.tokens.add(alice.id, "c" * 64, None)
        await uow.commit()
    assert (token.user_id, token.name) == (alice.id, None)

    async with uows() as uow:
        assert await uow.tokens.delete(bob.id, token.id) is None
        assert await uow.tokens.delete(alice.id, MISSING) is None
        await uow.commit()
    async with uows() as uow:
        assert await uow.users.by_token_hash("c" * 64) == alice
        assert await uow.tokens.delete(alice.id, token.id) == "c" * 64
        await uow.commit()
    async with uows() as uow:
        assert await uow.users.by_token_hash("c" * 64) is None
        assert await uow.tokens.delete(alice.id, token.id) is None


async def test_delete_named_deletes_that_users_tokens_of_that_name(uows: UnitOfWorkFactory) -> None:
    alice, bob = await add_user(uows), await add_user(uows)
    async with uows() as uow:
        await uow.tokens.add(alice.id, "1" * 64, "ci")
        await uow.tokens.add(alice.id, "2" * 64, "ci")
        await uow.tokens.add(alice.id, "3" * 64, "laptop")
        await uow.tokens.add(bob.id, "4" * 64, "ci")
        await uow.commit()

    async with uows() as uow:
        assert sorted(await uow.tokens.delete_named(alice.id, "ci")) == ["1" * 64, "2" * 64]
        assert await uow.tokens.delete_named(alice.id, "ci") == []
        assert await uow.tokens.delete_named(alice.id, "nothing") == []
        await uow.commit()
    async with uows() as uow:
        assert await uow.users.by_token_hash("1" * 64) is None
        assert await uow.users.by_token_hash("2" * 64) is None
        assert await uow.users.by_token_hash("3" * 64) == alice
        assert await uow.users.by_token_hash("4" * 64) == bob


# --- products --------------------------------------------------------------------------------


async def test_a_product_reads_back_as_added(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    product = await add_product(uows, user, "desk lamp", "19.90", sku="A-1", description="Lit")

    assert (product.user_id, product.sku, product.product_name) == (user.id, "A-1", "desk lamp")
    assert (product.product_description, product.product_price) == ("Lit", Decimal("19.90"))
    assert product.created_at == product.updated_at
    assert product.created_at.tzinfo is not None
    assert product.images == ()
    async with uows() as uow:
        assert await uow.products.get(MISSING) is None


async def test_images_keep_their_positions_through_moves_and_deletes(
    uows: UnitOfWorkFactory,
) -> None:
    user = await add_user(uows)
    product = await add_product(uows, user, images=("https://x/0.jpg", "https://x/1.jpg"))
    first, second = product.images
    assert [(i.position, i.source_url) for i in product.images] == [
        (0, "https://x/0.jpg"),
        (1, "https://x/1.jpg"),
    ]
    assert {i.status for i in product.images} == {ImageStatus.PENDING}

    async with uows() as uow:
        added = await uow.products.add_images(product.id, [(2, "https://x/2.jpg")])
        assert await uow.products.add_images(product.id, []) == []
        await uow.products.move_images([(first.id, 3), (second.id, 0)])
        await uow.commit()
    moved = await get_product(uows, product.id)
    assert [(i.id, i.position) for i in moved.images] == [
        (second.id, 0),
        (added[0], 2),
        (first.id, 3),
    ]
    assert moved.product_images == ["https://x/1.jpg", "https://x/2.jpg", "https://x/0.jpg"]

    async with uows() as uow:
        await uow.products.delete_images([added[0]])
        await uow.products.delete_images([])
        await uow.commit()
    kept = await get_product(uows, product.id)
    assert [(i.id, i.position) for i in kept.images] == [(second.id, 0), (first.id, 3)]


async def test_images_at_one_position_are_ordered_by_id(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    product = await add_product(uows, user)
    async with uows() as uow:
        ids = await uow.products.add_images(product.id, [(1, "https://x/a"), (1, "https://x/b")])
        await uow.commit()
    assert [i.id for i in (await get_product(uows, product.id)).images] == sorted(ids)


async def test_an_update_changes_only_the_fields_it_sets(uows: UnitOfWorkFactory) -> None:
    user, buyer = await add_user(uows), await add_user(uows)
    before = await add_product(
        uows, user, "lamp", "5.00", sku="S-1", description="old", images=("https://x/0.jpg",)
    )

    async with uows() as uow:
        await uow.products.update(before.id, ProductPatch(product_price=Decimal("7.25")))
        await uow.commit()
    priced = await get_product(uows, before.id)
    assert priced.product_price == Decimal("7.25")
    assert priced.updated_at > before.updated_at
    assert replace(priced, product_price=before.product_price, updated_at=before.updated_at) == (
        before
    )

    patch = ProductPatch(product_name="desk", product_description=None, sku=None, user_id=buyer.id)
    async with uows() as uow:
        await uow.products.update(before.id, patch)
        await uow.commit()
    moved = await get_product(uows, before.id)
    assert (moved.product_name, moved.product_description, moved.sku) == ("desk", None, None)
    assert (moved.user_id, moved.product_price) == (buyer.id, Decimal("7.25"))
    assert (moved.created_at, moved.images) == (before.created_at, before.images)


async def test_a_sku_is_unique_per_user(uows: UnitOfWorkFactory) -> None:
    alice, bob = await add_user(uows), await add_user(uows)
    await add_product(uows, alice, sku="S-1")
    other = await add_product(uows, alice, sku="S-2")
    await add_product(uows, bob, sku="S-1")  # another user's sku is theirs
    await add_product(uows, alice)  # no sku: any number of them
    await add_product(uows, alice)

    with pytest.raises(SkuTaken):
        async with uows() as uow:
            await uow.products.add(NewProduct("twin", Decimal(1), sku="S-1"), alice.id)
    with pytest.raises(SkuTaken):
        async with uows() as uow:
            await uow.products.update(other.id, ProductPatch(sku="S-1"))
    assert (await get_product(uows, other.id)).sku == "S-2"


@pytest.mark.parametrize(
    ("price", "sku", "description"),
    [
        ("0", None, None),
        ("0.10", "S-1", ""),
        ("19.99", "ÄÖ-1", "ü\nline"),
        ("99999999.99", "x", "d"),
    ],
)
async def test_add_returns_the_product_a_read_returns(
    uows: UnitOfWorkFactory, price: str, sku: str | None, description: str | None
) -> None:
    """Creating a product answers with what `add` returned, not with a read: the two must
    not differ in any field (a price's scale, a timestamp's precision or zone)."""
    user = await add_user(uows)
    draft = NewProduct("Lamp", Decimal(price), product_description=description, sku=sku)
    async with uows() as uow:
        added = await uow.products.add(draft, user.id)
        await uow.commit()

    read = await get_product(uows, added.id)
    assert added == read
    assert str(added.product_price) == str(read.product_price)
    assert added.created_at.utcoffset() == read.created_at.utcoffset()


async def test_a_deleted_product_takes_its_images_and_unlinks_their_jobs(
    uows: UnitOfWorkFactory,
) -> None:
    user = await add_user(uows)
    product = await add_product(uows, user, images=("https://x/0.jpg",))
    job = new_job(user, created_at=T0, image=(product.id, product.images[0].id))
    await add_jobs(uows, job)

    async with uows() as uow:
        await uow.products.delete(product.id)
        await uow.commit()

    async with uows() as uow:
        assert await uow.products.get(product.id) is None
        assert await uow.products.set_image_status(product.images[0].id, ImageStatus.READY) is None
    assert (await get_job(uows, job.id)).product_image_id is None


async def test_image_write_backs_return_the_product_id_or_none(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    product = await add_product(uows, user, images=("https://x/0.jpg", "https://x/1.jpg"))
    ready, failed = (image.id for image in product.images)

    async with uows() as uow:
        assert await uow.products.record_image_result(ready, RESULT) == product.id
        assert await uow.products.record_image_failure(failed, "HTTP 404", "http_4xx") == product.id
        assert await uow.products.record_image_result(MISSING, RESULT) is None
        assert await uow.products.record_image_failure(MISSING, "x", "x") is None
        assert await uow.products.set_image_status(MISSING, ImageStatus.PROCESSING) is None
        await uow.commit()
    written = await get_product(uows, product.id)
    assert written.updated_at > product.updated_at  # the product's ETag must change
    done, broken = written.images
    assert (done.status, done.compressed_url, done.output_key) == (
        ImageStatus.READY,
        RESULT.output_url,
        RESULT.output_key,
    )
    assert (done.width, done.height, done.bytes_in, done.bytes_out) == (640, 480, 9_000, 3_000)
    assert (done.error, done.error_code) == (None, None)
    assert (broken.status, broken.error, broken.error_code) == (
        ImageStatus.FAILED,
        "HTTP 404",
        "http_4xx",
    )
    assert written.compressed_product_images == [RESULT.output_url, None]

    async with uows() as uow:
        assert await uow.products.set_image_status(failed, ImageStatus.PENDING) == product.id
        await uow.commit()
    retried = (await get_product(uows, product.id)).images[1]
    assert (retried.status, retried.error, retried.error_code) == (ImageStatus.PENDING, None, None)


async def test_an_output_key_is_in_use_while_an_image_or_standalone_job_holds_it(
    uows: UnitOfWorkFactory,
) -> None:
    user = await add_user(uows)
    product = await add_product(uows, user, images=("https://x/0.jpg",))
    image_id = product.images[0].id
    standalone = new_job(user, created_at=T0, kind=JobKind.STANDALONE)
    for_image = new_job(user, created_at=T0, image=(product.id, image_id))
    await add_jobs(uows, standalone, for_image)

    async with uows() as uow:
        assert not await uow.products.output_key_in_use(RESULT.output_key)
        await uow.products.record_image_result(image_id, RESULT)
        await uow.commit()
    async with uows() as uow:
        assert await uow.products.output_key_in_use(RESULT.output_key)
        await uow.products.delete_images([image_id])
        # A product image's job keeps its key after the image is gone: not a holder.
        await uow.image_jobs.mark_succeeded(for_image.id, RESULT)
        await uow.commit()
    async with uows() as uow:
        assert not await uow.products.output_key_in_use(RESULT.output_key)
        await uow.image_jobs.mark_succeeded(standalone.id, RESULT)
        await uow.commit()
    async with uows() as uow:
        assert await uow.products.output_key_in_use(RESULT.output_key)
        assert not await uow.products.output_key_in_use("other/key.jpg")


# --- product search --------------------------------------------------------------------------

SORTED_NAMES = {
    # (name, price), added in this order; each sort's expected order by name, ties by id.
    ProductSort.NEWEST: ["pear", "fig", "apple", "kiwi", "fig", "date"],
    ProductSort.OLDEST: ["date", "fig", "kiwi", "apple", "fig", "pear"],
    ProductSort.CHEAPEST: ["fig", "fig", "date", "apple", "kiwi", "pear"],
    ProductSort.DEAREST: ["pear", "kiwi", "apple", "date", "fig", "fig"],
    ProductSort.NAME: ["apple", "date", "fig", "fig", "kiwi", "pear"],
}
CATALOGUE = [("date", "3.00"), ("fig", "1.50"), ("kiwi", "4.00"), ("apple", "3.00")]
CATALOGUE += [("fig", "1.50"), ("pear", "12.00")]


@pytest.fixture
async def catalogue(uows: UnitOfWorkFactory) -> tuple[User, list[Product]]:
    owner, stranger = await add_user(uows), await add_user(uows)
    rows = [
        await add_product(uows, owner, name, price, sku=f"SKU-{n}", images=(f"https://x/{n}",))
        for n, (name, price) in enumerate(CATALOGUE)
    ]
    await add_product(uows, stranger, "apple", "3.00", sku="SKU-0")
    return owner, rows


@pytest.mark.parametrize("sort", list(ProductSort))
async def test_search_sorts_and_pages_with_a_cursor(
    uows: UnitOfWorkFactory, catalogue: tuple[User, list[Product]], sort: ProductSort
) -> None:
    owner, rows = catalogue
    async with uows() as uow:
        everything = await uow.products.search(ProductQuery(owner.id, sort=sort, limit=100))
    assert [p.product_name for p in everything] == SORTED_NAMES[sort]
    assert sorted(everything, key=lambda p: p.id) == rows  # with their images

    # One row a page: every boundary is crossed, ties on the sort value included.
    pages: list[list[Product]] = []
    query = ProductQuery(owner.id, sort=sort, limit=1)
    async with uows() as uow:
        while page := await uow.products.search(query):
            pages.append(page)
            query = replace(query, after=sort_cursor(page[-1], sort))
    assert [p for page in pages for p in page] == everything
    assert [len(page) for page in pages] == [1] * len(CATALOGUE)


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"min_price": Decimal("3.00")}, ["apple", "date", "kiwi", "pear"]),
        ({"max_price": Decimal("3.00")}, ["apple", "date", "fig", "fig"]),
        ({"min_price": Decimal("1.51"), "max_price": Decimal("4")}, ["apple", "date", "kiwi"]),
        ({"name": "I"}, ["fig", "fig", "kiwi"]),  # a substring, in any case
        ({"name": "%"}, []),  # a wildcard is matched as itself
        ({"name": "_"}, []),
        ({"sku": "SKU-3"}, ["apple"]),
        ({"sku": "sku-3"}, []),
        ({"name": "fig", "max_price": Decimal("1.50"), "limit": 1}, ["fig"]),
    ],
    ids=["min", "max", "range", "name", "percent", "underscore", "sku", "sku-case", "limit"],
)
async def test_search_filters(
    uows: UnitOfWorkFactory,
    catalogue: tuple[User, list[Product]],
    query: dict[str, Any],
    names: list[str],
) -> None:
    owner, _ = catalogue
    async with uows() as uow:
        found = await uow.products.search(ProductQuery(owner.id, sort=ProductSort.NAME, **query))
    assert [p.product_name for p in found] == names
    assert {p.user_id for p in found} <= {owner.id}


# --- idempotency keys ------------------------------------------------------------------------


def record(
    user: User, key: str, *, expires_at: datetime, scope: str = "products.create"
) -> IdempotencyRecord:
    return IdempotencyRecord(
        user_id=user.id,
        scope=scope,
        key=key,
        fingerprint="f" * 64,
        status_code=201,
        sealed_body=b"\x00sealed\xff",
        location="/products/1",
        created_at=expires_at - timedelta(days=1),
        expires_at=expires_at,
    )


async def test_an_idempotency_key_is_held_once_per_user_and_scope(
    uows: UnitOfWorkFactory,
) -> None:
    alice, bob = await add_user(uows), await add_user(uows)
    held = record(alice, "k1", expires_at=T0 + timedelta(microseconds=123_456))
    async with uows() as uow:
        assert await uow.idempotency.get(alice.id, "products.create", "k1") is None
        await uow.idempotency.add(held)
        await uow.idempotency.add(record(bob, "k1", expires_at=T0))
        await uow.idempotency.add(record(alice, "k1", expires_at=T0, scope="images.create"))
        await uow.idempotency.add(record(alice, "k2", expires_at=T0))
        await uow.commit()

    with pytest.raises(IdempotentRequestInFlight):
        async with uows() as uow:
            await uow.idempotency.add(replace(held, fingerprint="0" * 64))
    async with uows() as uow:
        assert await uow.idempotency.get(alice.id, "products.create", "k1") == held
        await uow.idempotency.delete(alice.id, "products.create", "k1")
        await uow.idempotency.delete(alice.id, "products.create", "never-held")
        await uow.commit()
    async with uows() as uow:
        assert await uow.idempotency.get(alice.id, "products.create", "k1") is None
        assert await uow.idempotency.get(bob.id, "products.create", "k1") is not None
        assert await uow.idempotency.get(alice.id, "images.create", "k1") is not None
        await uow.idempotency.add(held)  # free again
        await uow.commit()


async def test_purge_expired_deletes_the_oldest_expired_first(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    now = T0 + timedelta(days=10)
    async with uows() as uow:
        for n, key in enumerate(["b", "a", "c"]):  # expired 3, 2 and 1 days ago
            await uow.idempotency.add(record(user, key, expires_at=now - timedelta(days=3 - n)))
        await uow.idempotency.add(record(user, "live", expires_at=now))  # not before `now`
        await uow.commit()

    async with uows() as uow:
        assert await uow.idempotency.purge_expired(now, limit=2) == 2
        await uow.commit()
    async with uows() as uow:
        assert await uow.idempotency.get(user.id, "products.create", "b") is None
        assert await uow.idempotency.get(user.id, "products.create", "a") is None
        assert await uow.idempotency.get(user.id, "products.create", "c") is not None
        assert await uow.idempotency.purge_expired(now, limit=2) == 1
        assert await uow.idempotency.purge_expired(now, limit=2) == 0
        await uow.commit()
    async with uows() as uow:
        assert await uow.idempotency.get(user.id, "products.create", "live") is not None


# --- image jobs ------------------------------------------------------------------------------


async def test_jobs_read_back_as_added(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    product = await add_product(uows, user, images=("https://x/0.jpg",))
    for_image = new_job(user, created_at=T0, image=(product.id, product.images[0].id))
    standalone = replace(
        new_job(user, created_at=T0 + timedelta(microseconds=1), kind=JobKind.STANDALONE),
        source_url=None,
        source_key="uploads/ab.png",
        callback_url="https://hooks.example.com/done",
        request_id=None,
        operations=[],
    )
    await add_jobs(uows, for_image, standalone)
    async with uows() as uow:
        await uow.image_jobs.add_many([])
        await uow.commit()

    assert await get_job(uows, for_image.id) == for_image
    assert await get_job(uows, standalone.id) == standalone
    async with uows() as uow:
        assert await uow.image_jobs.get("nope") is None


async def test_start_claims_only_unfinished_jobs_and_counts_attempts(
    uows: UnitOfWorkFactory,
) -> None:
    user = await add_user(uows)
    job = new_job(user, created_at=T0)
    await add_jobs(uows, job)

    async with uows() as uow:
        first = await uow.image_jobs.start(job.id)
        second = await uow.image_jobs.start(job.id)  # a redelivery of an unfinished job
        assert await uow.image_jobs.start("nope") is None
        await uow.commit()
    assert first is not None
    assert second is not None
    assert (first.status, first.attempts) == (JobStatus.PROCESSING, 1)
    assert (second.status, second.attempts) == (JobStatus.PROCESSING, 2)
    assert first.started_at is not None
    assert first.started_at > T0
    assert await get_job(uows, job.id) == second

    async with uows() as uow:
        assert await uow.image_jobs.mark_succeeded(job.id, RESULT)
        await uow.commit()
    async with uows() as uow:
        assert await uow.image_jobs.start(job.id) is None
    assert (await get_job(uows, job.id)).attempts == 2


async def test_a_job_finishes_once(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    won, lost, gone = (new_job(user, created_at=T0) for _ in range(3))
    await add_jobs(uows, won, lost, gone)
    dead_at = T0 + timedelta(days=1, microseconds=7)

    async with uows() as uow:
        await uow.image_jobs.start(won.id)
        await uow.image_jobs.record_failed_attempt(won.id, "timed out", "timeout")
        assert await uow.image_jobs.mark_succeeded(won.id, RESULT)
        assert not await uow.image_jobs.mark_succeeded(won.id, RESULT)
        assert not await uow.image_jobs.mark_failed(won.id, "late", "late", dead_at)
        assert await uow.image_jobs.mark_failed(lost.id, "HTTP 404", "http_4xx", dead_at)
        assert not await uow.image_jobs.mark_failed(lost.id, "again", None, None)
        assert not await uow.image_jobs.mark_succeeded(lost.id, RESULT)
        assert not await uow.image_jobs.mark_succeeded("nope", RESULT)
        assert not await uow.image_jobs.mark_failed("nope", "x", None, None)
        assert await uow.image_jobs.mark_failed(gone.id, "broken", None, None)
        await uow.commit()

    succeeded = await get_job(uows, won.id)
    assert (succeeded.status, succeeded.attempts, succeeded.finished) == (
        JobStatus.SUCCEEDED,
        1,
        True,
    )
    assert (succeeded.output_key, succeeded.output_url) == (RESULT.output_key, RESULT.output_url)
    assert (succeeded.width, succeeded.height, succeeded.bytes_in, succeeded.bytes_out) == (
        640,
        480,
        9_000,
        3_000,
    )
    assert (succeeded.error, succeeded.error_code, succeeded.dead_lettered_at) == (None, None, None)
    assert succeeded.finished_at is not None
    assert succeeded.started_at is not None
    assert succeeded.finished_at >= succeeded.started_at

    failed = await get_job(uows, lost.id)
    assert (failed.status, failed.error, failed.error_code) == (
        JobStatus.FAILED,
        "HTTP 404",
        "http_4xx",
    )
    assert (failed.dead_lettered_at, failed.output_key, failed.attempts) == (dead_at, None, 0)
    assert failed.finished_at is not None
    plain = await get_job(uows, gone.id)
    assert (plain.status, plain.error_code, plain.dead_lettered_at) == (
        JobStatus.FAILED,
        None,
        None,
    )


async def test_a_failed_attempt_is_noted_and_the_job_stays_unfinished(
    uows: UnitOfWorkFactory,
) -> None:
    user = await add_user(uows)
    job = new_job(user, created_at=T0)
    await add_jobs(uows, job)
    async with uows() as uow:
        started = await uow.image_jobs.start(job.id)
        await uow.image_jobs.record_failed_attempt(job.id, "HTTP 503", "http_5xx")
        await uow.commit()
    assert started is not None
    assert await get_job(uows, job.id) == replace(started, error="HTTP 503", error_code="http_5xx")


async def test_a_redriven_job_is_queued_as_new(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    job = new_job(user, created_at=T0)
    await add_jobs(uows, job)
    async with uows() as uow:
        await uow.image_jobs.start(job.id)
        await uow.image_jobs.mark_failed(job.id, "gave up", "retries_exhausted", T0)
        await uow.commit()
    async with uows() as uow:
        await uow.image_jobs.reset_for_redrive(job.id)
        await uow.commit()

    redriven = await get_job(uows, job.id)
    assert (redriven.status, redriven.attempts, redriven.finished) == (JobStatus.QUEUED, 0, False)
    assert (redriven.finished_at, redriven.dead_lettered_at) == (None, None)
    async with uows() as uow:
        restarted = await uow.image_jobs.start(job.id)
    assert restarted is not None
    assert restarted.attempts == 1


async def test_job_search_filters_newest_first_and_pages_after_a_job(
    uows: UnitOfWorkFactory,
) -> None:
    alice, bob = await add_user(uows), await add_user(uows)
    tick = timedelta(seconds=1)
    a1, a2, a3 = (new_job(alice, created_at=T0 + n * tick) for n in range(3))
    s1 = new_job(alice, created_at=T0 + 3 * tick, kind=JobKind.STANDALONE)
    b1 = new_job(bob, created_at=T0 + 4 * tick, kind=JobKind.STANDALONE)
    tied = [new_job(bob, created_at=T0 + 9 * tick) for _ in range(2)]  # by id, then
    await add_jobs(uows, b1, a1, a3, s1, a2, *tied)
    async with uows() as uow:
        await uow.image_jobs.start(a2.id)
        await uow.image_jobs.mark_failed(a3.id, "gave up", "retries_exhausted", T0)
        await uow.image_jobs.mark_failed(s1.id, "gave up", "retries_exhausted", T0)
        await uow.image_jobs.mark_failed(b1.id, "broken", None, None)
        await uow.commit()

    async def ids(**criteria: Any) -> list[str]:
        async with uows() as uow:
            jobs = await uow.image_jobs.search(**criteria)
        return [job.id for job in jobs]

    newest_tied = sorted((job.id for job in tied), reverse=True)
    assert await ids(user_id=None) == [*newest_tied, b1.id, s1.id, a3.id, a2.id, a1.id]
    assert await ids(user_id=alice.id) == [s1.id, a3.id, a2.id, a1.id]
    assert await ids(user_id=alice.id, status=JobStatus.PROCESSING) == [a2.id]
    assert await ids(user_id=None, status=JobStatus.FAILED) == [b1.id, s1.id, a3.id]
    assert await ids(user_id=None, dead_lettered=True) == [s1.id, a3.id]
    assert await ids(user_id=None, standalone_only=True) == [b1.id, s1.id]
    assert await ids(user_id=alice.id, standalone_only=True, dead_lettered=True) == [s1.id]
    assert await ids(user_id=None, limit=2) == newest_tied
    assert await ids(user_id=None, limit=2, after=newest_tied[0]) == [newest_tied[1], b1.id]
    assert await ids(user_id=None, limit=2, after=b1.id) == [s1.id, a3.id]
    # The anchor need not match the filters: it only says where the last page ended.
    assert await ids(user_id=alice.id, after=b1.id) == [s1.id, a3.id, a2.id, a1.id]
    assert await ids(user_id=None, status=JobStatus.QUEUED, after=a2.id) == [a1.id]
    assert await ids(user_id=None, after=a1.id) == []
    with pytest.raises(InvalidInput):
        await ids(user_id=None, after="not-a-job")


async def test_unfinished_jobs_by_their_last_step(uows: UnitOfWorkFactory) -> None:
    user = await add_user(uows)
    queued = new_job(user, created_at=T0)
    started = new_job(user, created_at=T0)
    finished = new_job(user, created_at=T0)
    await add_jobs(uows, queued, started, finished)
    async with uows() as uow:
        claimed = await uow.image_jobs.start(started.id)
        await uow.image_jobs.mark_failed(finished.id, "broken", None, None)
        await uow.commit()
    assert claimed is not None
    assert claimed.started_at is not None

    async def ids(older_than: datetime | None) -> set[str]:
        async with uows() as uow:
            return {job.id for job in await uow.image_jobs.unfinished(older_than)}

    assert await ids(None) == {queued.id, started.id}
    assert await ids(T0) == set()  # strictly before
    assert await ids(T0 + timedelta(microseconds=1)) == {queued.id}  # started since
    assert await ids(claimed.started_at) == {queued.id}
    assert await ids(claimed.started_at + timedelta(microseconds=1)) == {queued.id, started.id}


async def test_counts_jobs_by_state_and_the_outbox_backlog(uows: UnitOfWorkFactory) -> None:
    empty = {"queued": 0, "processing": 0, "dead_lettered": 0, "outbox_unpublished": 0}
    async with uows() as uow:
        assert await uow.image_jobs.counts() == empty
    user = await add_user(uows)
    jobs = [new_job(user, created_at=T0) for _ in range(5)]
    await add_jobs(uows, *jobs)
    async with uows() as uow:
        await uow.outbox.add_many([job.id for job in jobs], "process_image", "images", None)
        await uow.image_jobs.start(jobs[0].id)
        await uow.image_jobs.start(jobs[1].id)
        await uow.image_jobs.mark_failed(jobs[1].id, "gave up", "retries_exhausted", T0)
        await uow.image_jobs.mark_succeeded(jobs[2].id, RESULT)
        await uow.commit()
    async with uows() as uow:
        claimed = await uow.outbox.claim(3)
        await uow.outbox.mark_published([message.id for message in claimed])
        await uow.commit()

    async with uows() as uow:
        counts = await uow.image_jobs.counts()
    assert counts == {"queued": 2, "processing": 1, "dead_lettered": 1, "outbox_unpublished": 2}


# --- the outbox ------------------------------------------------------------------------------


async def test_the_outbox_hands_out_unpublished_messages_oldest_first(
    uows: UnitOfWorkFactory,
) -> None:
    async with uows() as uow:
        assert await uow.outbox.claim(10) == []
        await uow.outbox.add_many(["j1", "j2"], "process_image", "images", "req-1")
        await uow.outbox.add_many([], "process_image", "images", None)
        await uow.commit()
    async with uows() as uow:
        await uow.outbox.add_many(["j3"], "redrive", "images.slow", None)
        await uow.commit()

    async with uows() as uow:
        first = await uow.outbox.claim(2)
        assert [(m.job_id, m.actor, m.queue, m.request_id) for m in first] == [
            ("j1", "process_image", "images", "req-1"),
            ("j2", "process_image", "images", "req-1"),
        ]
        assert first[0].id < first[1].id
        everything = await uow.outbox.claim(10)
        assert [m.job_id for m in everything] == ["j1", "j2", "j3"]
        assert everything[:2] == first
        await uow.outbox.mark_published([first[0].id])
        await uow.outbox.mark_published([])
        await uow.commit()
    async with uows() as uow:
        rest = await uow.outbox.claim(10)
    assert [m.job_id for m in rest] == ["j2", "j3"]
    assert rest[1] == OutboxMessage(rest[1].id, "j3", "redrive", "images.slow", None)

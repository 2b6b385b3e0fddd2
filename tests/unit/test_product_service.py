"""Product services against the in-memory unit of work: ownership, idempotency, updates,
listing. HTTP-level behaviour lives in tests/integration/test_products_api.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockroom.domain import products
from stockroom.domain.errors import (
    IdempotencyKeyReused,
    NotAllowed,
    ProductNotFound,
    SkuTaken,
    UnknownUser,
)
from stockroom.domain.idempotency import IdempotencyKey
from stockroom.domain.models import ImageStatus, Product, User
from stockroom.domain.products import fingerprint, owner_for
from stockroom.domain.queries import NewProduct, ProductPatch, ProductQuery, ProductSort
from stockroom.domain.rules import parse_price
from tests.unit.fakes import FakeDatabase, RecordingCache

LAMP_TIME = datetime(2024, 1, 1, tzinfo=UTC)
A, B, C = (f"https://img.example.com/{name}.jpg" for name in "abc")
LAMP = NewProduct(
    product_name="Desk lamp",
    product_price=Decimal("19.99"),
    product_description="A lamp",
    product_images=(A, B),
    sku="L-1",
)


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


async def make_user(db: FakeDatabase, email: str, *, admin: bool = False) -> User:
    async with db.uow() as uow:
        user = await uow.users.add(email, None, admin)
        await uow.commit()
    return user


@pytest.fixture
async def alice(db: FakeDatabase) -> User:
    return await make_user(db, "alice@example.com")


@pytest.fixture
async def bob(db: FakeDatabase) -> User:
    return await make_user(db, "bob@example.com")


@pytest.fixture
async def admin(db: FakeDatabase) -> User:
    return await make_user(db, "root@example.com", admin=True)


async def create(db: FakeDatabase, actor: User, draft: NewProduct = LAMP) -> Product:
    product = (await products.create_product(db.uow(), db.admissions(), actor, draft)).product
    assert product is not None
    return product


def key(draft: NewProduct, value: str = "k-1") -> IdempotencyKey:
    return IdempotencyKey(value, fingerprint(draft))


def queued(db: FakeDatabase) -> list[tuple[int | None, str | None]]:
    """(product_image_id, source_url) of every job with a matching outbox message, in order."""
    messages = [message for message, _published in db.tables.outbox.values()]
    jobs = [db.tables.jobs[message.job_id] for message in messages]
    return [(job.product_image_id, job.source_url) for job in jobs]


# -- ownership ---------------------------------------------------------------------------
def test_owner_for_is_the_caller_unless_an_admin_names_someone() -> None:
    user = User(1, "u@example.com", None, False, LAMP_TIME)
    root = replace(user, id=2, is_admin=True)

    assert owner_for(user, None) == 1
    assert owner_for(user, 1) == 1
    assert owner_for(root, None) == 2
    assert owner_for(root, 1) == 1
    with pytest.raises(NotAllowed):
        owner_for(user, 2)


async def test_create_belongs_to_the_caller_with_pending_images_in_order(
    db: FakeDatabase, alice: User
) -> None:
    created = await products.create_product(db.uow(), db.admissions(), alice, LAMP)

    product = created.product
    assert not created.replayed
    assert product is not None
    assert product.user_id == alice.id
    assert product.product_images == [A, B]
    assert [(i.position, i.status) for i in product.images] == [
        (0, ImageStatus.PENDING),
        (1, ImageStatus.PENDING),
    ]
    assert product.compressed_product_images == [None, None]
    assert db.tables.products == {product.id: product}
    assert queued(db) == [(i.id, i.source_url) for i in product.images]


async def test_a_failed_create_queues_nothing(db: FakeDatabase, alice: User) -> None:
    await create(db, alice)
    with pytest.raises(SkuTaken):
        await create(db, alice)

    assert len(db.tables.products) == 1
    assert len(queued(db)) == 2


async def test_create_for_another_user_is_not_allowed_and_creates_nothing(
    db: FakeDatabase, alice: User, bob: User
) -> None:
    with pytest.raises(NotAllowed):
        await create(db, alice, replace(LAMP, user_id=bob.id))

    assert db.tables.products == {}


async def test_admin_creates_for_an_existing_user_but_not_a_missing_one(
    db: FakeDatabase, admin: User, alice: User
) -> None:
    product = await create(db, admin, replace(LAMP, user_id=alice.id))
    with pytest.raises(UnknownUser) as missing:
        await create(db, admin, replace(LAMP, user_id=999_999))

    assert product.user_id == alice.id
    assert [e.field for e in missing.value.errors] == ["user_id"]
    assert list(db.tables.products) == [product.id]


async def test_someone_elses_product_is_not_found_for_every_operation(
    db: FakeDatabase, alice: User, bob: User
) -> None:
    product = await create(db, alice)

    with pytest.raises(ProductNotFound):
        await products.get_product(db.uow(), bob, product.id)
    with pytest.raises(ProductNotFound):
        await products.update_product(db.uow(), bob, product.id, ProductPatch(product_name="Mine"))
    with pytest.raises(ProductNotFound):
        await products.delete_product(db.uow(), bob, product.id)

    assert db.tables.products == {product.id: product}


async def test_a_missing_product_is_not_found(db: FakeDatabase, admin: User) -> None:
    with pytest.raises(ProductNotFound):
        await products.get_product(db.uow(), admin, 12345)


async def test_admin_sees_changes_and_deletes_any_product(
    db: FakeDatabase, alice: User, admin: User
) -> None:
    product = await create(db, alice)

    seen = await products.get_product(db.uow(), admin, product.id)
    changed = await products.update_product(db.uow(), admin, product.id, ProductPatch(sku="ADM"))
    await products.delete_product(db.uow(), admin, product.id)

    assert seen == product
    assert (changed.sku, changed.user_id) == ("ADM", alice.id)
    assert db.tables.products == {}


async def test_list_shows_only_the_callers_products_unless_an_admin_asks(
    db: FakeDatabase, alice: User, bob: User, admin: User
) -> None:
    mine = await create(db, alice)
    await create(db, bob)
    query = ProductQuery(owner_id=0)

    own = await products.list_products(db.uow(), alice, query)
    as_admin = await products.list_products(db.uow(), admin, query, user_id=alice.id)
    with pytest.raises(NotAllowed):
        await products.list_products(db.uow(), alice, query, user_id=bob.id)

    assert [p.id for p in own.items] == [mine.id]
    assert [p.id for p in as_admin.items] == [mine.id]


# -- idempotency -------------------------------------------------------------------------
async def test_same_key_and_body_replays_the_first_product_and_creates_nothing(
    db: FakeDatabase, alice: User
) -> None:
    first = await products.create_product(db.uow(), db.admissions(), alice, LAMP, key(LAMP))
    again = await products.create_product(db.uow(), db.admissions(), alice, LAMP, key(LAMP))

    assert again.replayed
    assert again.product is None
    assert again.response == first.response
    assert first.product is not None
    assert list(db.tables.products) == [first.product.id]
    assert len(queued(db)) == 2


async def test_a_replay_answers_the_first_response_not_the_product_as_it_is_now(
    db: FakeDatabase, alice: User, bob: User, admin: User
) -> None:
    """After the product moved to another user and changed, the replay still says what
    the first answer said, and nothing of what the product became."""
    render = _render_description
    first = await products.create_product(
        db.uow(), db.admissions(), alice, LAMP, key(LAMP), render=render
    )
    assert first.product is not None
    await products.update_product(db.uow(), admin, first.product.id, ProductPatch(user_id=bob.id))
    await products.update_product(
        db.uow(), bob, first.product.id, ProductPatch(product_description="B")
    )

    again = await products.create_product(
        db.uow(), db.admissions(), alice, LAMP, key(LAMP), render=render
    )

    assert again.replayed
    assert again.response.body == b"A lamp"


def _render_description(product: Product) -> bytes:
    return (product.product_description or "").encode()


async def test_an_expired_key_creates_anew(db: FakeDatabase, alice: User) -> None:
    short = replace(key(LAMP), ttl=timedelta(seconds=-1))
    first = await products.create_product(db.uow(), db.admissions(), alice, LAMP, short)
    again = await products.create_product(
        db.uow(), db.admissions(), alice, replace(LAMP, sku="L-2"), short
    )

    assert not again.replayed
    assert again.product is not None
    assert first.product is not None
    assert again.product.id != first.product.id


async def test_a_replay_with_another_token_of_the_caller_is_a_conflict(
    db: FakeDatabase, alice: User
) -> None:
    await products.create_product(
        db.uow(), db.admissions(), alice, LAMP, replace(key(LAMP), seal="token-1")
    )

    with pytest.raises(IdempotencyKeyReused):
        await products.create_product(
            db.uow(), db.admissions(), alice, LAMP, replace(key(LAMP), seal="token-2")
        )


async def test_same_key_with_a_different_body_is_idempotency_key_reused(
    db: FakeDatabase, alice: User
) -> None:
    await products.create_product(db.uow(), db.admissions(), alice, LAMP, key(LAMP))
    other = replace(LAMP, product_price=Decimal("20.00"))

    with pytest.raises(IdempotencyKeyReused):
        await products.create_product(db.uow(), db.admissions(), alice, other, key(other))

    assert len(db.tables.products) == 1


async def test_idempotency_keys_are_per_caller(db: FakeDatabase, alice: User, bob: User) -> None:
    first = await products.create_product(db.uow(), db.admissions(), alice, LAMP, key(LAMP))
    theirs = await products.create_product(db.uow(), db.admissions(), bob, LAMP, key(LAMP))

    assert not theirs.replayed
    assert theirs.product is not None
    assert first.product is not None
    assert theirs.product.id != first.product.id
    assert theirs.product.user_id == bob.id


async def test_a_failed_create_does_not_burn_its_idempotency_key(
    db: FakeDatabase, alice: User
) -> None:
    await create(db, alice)  # takes sku L-1
    with pytest.raises(SkuTaken):
        await products.create_product(db.uow(), db.admissions(), alice, LAMP, key(LAMP))
    retry = replace(LAMP, sku="L-2")

    created = await products.create_product(db.uow(), db.admissions(), alice, retry, key(retry))

    assert not created.replayed
    assert db.tables.idempotency.keys() == {(alice.id, products.CREATE_SCOPE, "k-1")}


def test_fingerprint_is_stable_across_processes_and_releases() -> None:
    # Stored fingerprints must match after a deploy: changing the hash breaks retries.
    assert fingerprint(LAMP) == fingerprint(replace(LAMP))
    assert fingerprint(LAMP) == ("4e77cc9c24377053e10118b2c8e6efad7790272034fea6ab96efea9092fcd76a")


def test_fingerprint_is_the_same_for_every_spelling_of_a_price() -> None:
    spellings = ["19.9", "19.90", 19.9, Decimal("19.900"), " 19.90 "]

    prints = {fingerprint(replace(LAMP, product_price=parse_price(raw))) for raw in spellings}

    assert len(prints) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"product_name": "Desk lamp 2"},
        {"product_price": Decimal("19.98")},
        {"product_description": None},
        {"product_images": (B, A)},
        {"product_images": (A,)},
        {"sku": None},
        {"user_id": 7},
    ],
)
def test_fingerprint_changes_with_every_field(change: dict[str, object]) -> None:
    assert fingerprint(replace(LAMP, **change)) != fingerprint(LAMP)  # type: ignore[arg-type]


# -- update ------------------------------------------------------------------------------
async def processed(db: FakeDatabase, product: Product) -> Product:
    """Mark every image of `product` ready, as the pipeline would."""
    for image in product.images:
        db.set_image(
            image.id, status=ImageStatus.READY, compressed_url=f"https://media/{image.id}.jpg"
        )
    return db.tables.products[product.id]


async def test_patch_changes_only_the_fields_sent(db: FakeDatabase, alice: User) -> None:
    product = await create(db, alice)

    changed = await products.update_product(
        db.uow(),
        alice,
        product.id,
        ProductPatch(product_name="Floor lamp", product_price=Decimal(5)),
    )

    assert (changed.product_name, changed.product_price) == ("Floor lamp", Decimal(5))
    assert (changed.product_description, changed.sku) == (LAMP.product_description, LAMP.sku)
    assert changed.images == product.images
    assert changed.updated_at > product.updated_at
    assert db.tables.products[product.id] == changed


async def test_patch_images_requeues_only_new_urls(db: FakeDatabase, alice: User) -> None:
    before = await processed(db, await create(db, alice))
    kept = {i.source_url: i for i in before.images}

    already_queued = queued(db)

    after = await products.update_product(
        db.uow(), alice, before.id, ProductPatch(product_images=(C, A))
    )

    assert after.product_images == [C, A]
    new, old = after.images
    assert (new.status, new.compressed_url) == (ImageStatus.PENDING, None)
    assert new.id not in {i.id for i in before.images}
    assert old == replace(kept[A], position=1)  # same row, same result, moved
    assert after.compressed_product_images == [None, kept[A].compressed_url]
    a_job, b_job, *new_jobs = queued(db)
    assert a_job == already_queued[0]
    assert new_jobs == [(new.id, C)]
    assert b_job == (None, B)  # the dropped row's job finds no image and writes nothing


async def test_patch_without_images_queues_nothing(db: FakeDatabase, alice: User) -> None:
    product = await create(db, alice)
    already_queued = queued(db)

    await products.update_product(db.uow(), alice, product.id, ProductPatch(product_name="Other"))
    await products.update_product(db.uow(), alice, product.id, ProductPatch(product_images=(A, B)))

    assert queued(db) == already_queued


async def test_patch_images_keeps_one_row_per_duplicate_url(db: FakeDatabase, alice: User) -> None:
    before = await processed(db, await create(db, alice, replace(LAMP, product_images=(A, B, A))))
    first_a, row_b, second_a = before.images

    after = await products.update_product(
        db.uow(), alice, before.id, ProductPatch(product_images=(B, A, A, A))
    )

    assert after.product_images == [B, A, A, A]
    assert [i.id for i in after.images[:3]] == [row_b.id, first_a.id, second_a.id]
    assert all(i.status is ImageStatus.READY for i in after.images[:3])
    assert after.images[3].status is ImageStatus.PENDING
    assert [i.position for i in after.images] == [0, 1, 2, 3]


async def test_patch_images_drops_rows_of_urls_that_go(db: FakeDatabase, alice: User) -> None:
    before = await processed(db, await create(db, alice, replace(LAMP, product_images=(A, B, A))))

    after = await products.update_product(
        db.uow(), alice, before.id, ProductPatch(product_images=(A,))
    )
    emptied = await products.update_product(
        db.uow(), alice, before.id, ProductPatch(product_images=())
    )

    assert after.images == (before.images[0],)
    assert emptied.images == ()


async def test_patch_reorder_keeps_every_row_and_result(db: FakeDatabase, alice: User) -> None:
    before = await processed(db, await create(db, alice))

    after = await products.update_product(
        db.uow(), alice, before.id, ProductPatch(product_images=(B, A))
    )

    assert [(i.id, i.position) for i in after.images] == [
        (before.images[1].id, 0),
        (before.images[0].id, 1),
    ]
    assert after.compressed_product_images == list(reversed(before.compressed_product_images))


async def test_patch_invalidates_the_cache_after_the_commit(db: FakeDatabase, alice: User) -> None:
    product = await create(db, alice)
    cache = RecordingCache(db)

    changed = await products.update_product(
        db.uow(), alice, product.id, ProductPatch(product_name="New")
    )

    # The callback saw the committed row: a reader refilling the cache gets the new one.
    assert cache.invalidated == [(product.id, changed)]


async def test_a_failed_patch_changes_nothing_and_invalidates_nothing(
    db: FakeDatabase, alice: User
) -> None:
    await create(db, alice, replace(LAMP, sku="TAKEN"))
    product = await create(db, alice)
    cache = RecordingCache(db)

    with pytest.raises(SkuTaken):
        await products.update_product(
            db.uow(), alice, product.id, ProductPatch(product_images=(C,), sku="TAKEN")
        )

    assert db.tables.products[product.id] == product
    assert cache.invalidated == []


async def test_patch_user_id_moves_only_for_admins_and_to_existing_users(
    db: FakeDatabase, alice: User, bob: User, admin: User
) -> None:
    product = await create(db, alice)

    with pytest.raises(NotAllowed):
        await products.update_product(db.uow(), alice, product.id, ProductPatch(user_id=bob.id))
    with pytest.raises(UnknownUser):
        await products.update_product(db.uow(), admin, product.id, ProductPatch(user_id=999_999))
    moved = await products.update_product(db.uow(), admin, product.id, ProductPatch(user_id=bob.id))

    assert moved.user_id == bob.id
    with pytest.raises(ProductNotFound):
        await products.get_product(db.uow(), alice, product.id)


async def test_delete_removes_the_product_then_invalidates(db: FakeDatabase, alice: User) -> None:
    product = await create(db, alice)
    cache = RecordingCache(db)

    deleted = await products.delete_product(db.uow(), alice, product.id)

    assert deleted == product
    assert cache.invalidated == [(product.id, None)]
    with pytest.raises(ProductNotFound):
        await products.get_product(db.uow(), alice, product.id)


# -- listing -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        ("1.001", "2.999", ("1.01", "2.99")),
        ("1.009", "2.001", ("1.01", "2.00")),
        ("1.00", "2.00", ("1.00", "2.00")),
        ("0.0001", "0.0099", ("0.01", "0.00")),
        ("5", "5", ("5.00", "5.00")),
    ],
)
async def test_list_price_bounds_round_inward_to_cents(
    db: FakeDatabase, alice: User, low: str, high: str, expected: tuple[str, str]
) -> None:
    query = ProductQuery(owner_id=0, min_price=Decimal(low), max_price=Decimal(high))

    async with db.uow() as uow:
        await products.list_products(uow, alice, query)

    sent = uow.products.searches[-1]
    assert (sent.min_price, sent.max_price) == tuple(Decimal(x) for x in expected)
    assert (str(sent.min_price), str(sent.max_price)) == expected


@given(
    bound=st.decimals(min_value=0, max_value=Decimal("99999999.99"), places=6),
)
async def test_rounded_price_bounds_never_widen_the_range(bound: Decimal) -> None:
    db = FakeDatabase()
    actor = User(1, "u@example.com", None, False, LAMP_TIME)
    query = ProductQuery(owner_id=1, min_price=bound, max_price=bound)

    async with db.uow() as uow:
        await products.list_products(uow, actor, query)

    sent = uow.products.searches[-1]
    assert sent.min_price is not None
    assert sent.max_price is not None
    assert bound <= sent.min_price < bound + Decimal("0.01")
    assert bound - Decimal("0.01") < sent.max_price <= bound
    assert sent.min_price.as_tuple().exponent == sent.max_price.as_tuple().exponent == -2


async def test_list_asks_for_one_extra_row_to_know_if_there_is_a_next_page(
    db: FakeDatabase, alice: User
) -> None:
    for price in ("3", "1", "2"):
        await create(db, alice, replace(LAMP, sku=None, product_price=Decimal(price)))
    query = ProductQuery(owner_id=0, sort=ProductSort.CHEAPEST, limit=2)

    async with db.uow() as uow:
        first = await products.list_products(uow, alice, query)
    second = await products.list_products(db.uow(), alice, replace(query, after=first.next_cursor))

    assert uow.products.searches[-1].limit == 3
    assert [p.product_price for p in first.items] == [1, 2]
    assert first.next_cursor == products.sort_cursor(first.items[-1], ProductSort.CHEAPEST)
    assert [p.product_price for p in second.items] == [3]
    assert second.next_cursor is None

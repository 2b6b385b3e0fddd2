"""Every service that writes records what it changed on its unit of work, so no write path
can skip an invalidation, a file's removal or a live event: the effects run from those
records after the commit (domain/effects.py), and no service holds a cache, a store or a
publisher to forget."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import stockroom.domain
from stockroom.db.job_transitions import UnitOfWorkJobTransitions
from stockroom.domain import image_jobs, imports, jobs, products, users
from stockroom.domain.csv_import import read_import
from stockroom.domain.errors import SourceClientError, SourceServerError
from stockroom.domain.events import (
    ImageChanged,
    JobChanged,
    OutputsReleased,
    ProductChanged,
    TokenRevoked,
)
from stockroom.domain.models import ImageResult, ImageStatus, User
from stockroom.domain.queries import NewProduct, ProductPatch
from tests.support.csv_files import csv_bytes
from tests.support.products import new_product
from tests.unit.fakes import FakeDatabase

A, B = "https://img.example.com/a.jpg", "https://img.example.com/b.jpg"
RESULT = ImageResult("img/ab/out.jpg", "https://cdn/out.jpg", 10, 10, 100, 50)
# Reads may take a cache (cache-aside), and the webhook actor's service its sender (sending
# is its whole job); no write may hold a cache, a store or a publisher.
ALLOWED = {"authenticate", "read_product", "deliver"}
HELD_BY_EFFECTS = ("ProductCache", "TokenCache", "ImageStore", "LiveHub", "WebhookSender")


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
async def alice(db: FakeDatabase) -> User:
    user, _ = await users.create_user(db.uow(), email="alice@example.com")
    return user


async def lamp(db: FakeDatabase, alice: User, *urls: str) -> int:
    product = await new_product(
        db.uow(), alice, NewProduct("Lamp", Decimal(5), product_images=urls or (A,))
    )
    return product.id


def test_no_domain_function_takes_what_the_effects_hold() -> None:
    offenders = []
    for module_info in pkgutil.iter_modules(stockroom.domain.__path__):
        module = importlib.import_module(f"stockroom.domain.{module_info.name}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__ or name in ALLOWED:
                continue
            for parameter in inspect.signature(function).parameters.values():
                if any(held in str(parameter.annotation) for held in HELD_BY_EFFECTS):
                    offenders.append(f"{module.__name__}.{name}({parameter.name})")
    assert offenders == []


async def test_a_patch_records_the_change_and_the_released_files(
    db: FakeDatabase, alice: User
) -> None:
    product_id = await lamp(db, alice, A, B)
    released = db.tables.products[product_id].images[0]
    db.set_image(released.id, status=ImageStatus.READY, output_key="img/a")
    db.events.clear()

    await products.update_product(db.uow(), alice, product_id, ProductPatch(product_images=(B,)))

    assert db.events == [OutputsReleased(("img/a",)), ProductChanged(product_id)]


@pytest.mark.parametrize("patch", [ProductPatch(product_name="New"), ProductPatch(sku="S-9")])
async def test_every_field_patch_records_the_change(
    db: FakeDatabase, alice: User, patch: ProductPatch
) -> None:
    product_id = await lamp(db, alice)
    db.events.clear()

    await products.update_product(db.uow(), alice, product_id, patch)

    assert db.events == [ProductChanged(product_id)]


async def test_a_delete_records_the_change_and_the_released_files(
    db: FakeDatabase, alice: User
) -> None:
    product_id = await lamp(db, alice)
    image = db.tables.products[product_id].images[0]
    db.set_image(image.id, status=ImageStatus.READY, output_key="img/a")
    db.events.clear()

    await products.delete_product(db.uow(), alice, product_id)

    assert db.events == [OutputsReleased(("img/a",)), ProductChanged(product_id)]


async def test_a_product_images_job_records_each_of_its_steps(
    db: FakeDatabase, alice: User
) -> None:
    product_id = await lamp(db, alice)
    (job_id,) = db.tables.jobs
    image_id = db.tables.products[product_id].images[0].id
    transitions = UnitOfWorkJobTransitions(db.uow)
    step = [ProductChanged(product_id), ImageChanged(product_id, image_id)]
    db.events.clear()

    job = await image_jobs.start_job(transitions, db.uow(), job_id)
    assert job is not None
    assert db.events == step
    await image_jobs.fail_job(db.uow(), job, SourceServerError("503"), final=False)
    assert db.events == step * 2
    job = await image_jobs.start_job(transitions, db.uow(), job_id)
    assert job is not None
    await image_jobs.fail_job(db.uow(), job, SourceClientError("404"), final=True)
    assert db.events == step * 4
    await image_jobs.redrive(db.uow(), User(0, "ops", None, True, datetime.now(UTC)), job_id)
    assert db.events == step * 5
    job = await image_jobs.start_job(transitions, db.uow(), job_id)
    assert job is not None
    await image_jobs.succeed_job(transitions, job, RESULT)
    assert db.events == step * 7


async def test_a_standalone_jobs_steps_are_job_events(db: FakeDatabase, alice: User) -> None:
    await jobs.submit_job(
        db.uow(), db.admissions(), alice, jobs.NewJob(source_url=A), render=lambda job: b""
    )
    (job_id,) = db.tables.jobs
    transitions = UnitOfWorkJobTransitions(db.uow)

    job = await image_jobs.start_job(transitions, db.uow(), job_id)
    assert job is not None
    await image_jobs.succeed_job(transitions, job, RESULT)

    assert db.events == [JobChanged(job_id), JobChanged(job_id)]


async def test_an_import_that_updates_a_product_records_the_change(
    db: FakeDatabase, alice: User
) -> None:
    product = await new_product(
        db.uow(), alice, NewProduct("Old", Decimal(5), product_images=(A,), sku="S-1")
    )
    header = ["Serial Number", "Product Name", "Input Image URLs"]
    parsed = read_import([csv_bytes([header, ["S-1", "New", A]])])
    await imports.accept_import(db.uow(), alice, parsed, per_batch=10, render=lambda i: b"")
    (batch_id,) = db.tables.import_batches
    db.events.clear()

    await imports.apply_batch(db.uow(), batch_id)

    assert ProductChanged(product.id) in db.events


async def test_revoking_tokens_records_each_one(db: FakeDatabase, alice: User) -> None:
    first = await users.create_token(db.uow(), alice, name="ci")
    second = await users.create_token(db.uow(), alice, name="demo")
    db.events.clear()

    await users.revoke_token(db.uow(), alice, first.token.id)
    await users.replace_named_tokens(db.uow(), alice, "demo")

    assert db.events == [
        TokenRevoked(users.token_cache_key(users.hash_token(first.secret))),
        TokenRevoked(users.token_cache_key(users.hash_token(second.secret))),
    ]

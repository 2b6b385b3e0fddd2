"""The import service against the in-memory unit of work: batches applied once, the PATCH
rule on existing products, finishing once, failing for good, requeueing. The HTTP side and
the pipeline are in tests/integration/test_imports_api.py."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from stockroom.domain import imports
from stockroom.domain.csv_import import read_import
from stockroom.domain.errors import ImportNotFound
from stockroom.domain.events import OutputsReleased
from stockroom.domain.image_jobs import IMPORTS_QUEUE, PROCESS_IMPORT_IMAGE
from stockroom.domain.models import (
    ImageStatus,
    Import,
    ImportStatus,
    JobStatus,
    Product,
    User,
)
from stockroom.domain.ports import UnitOfWork
from stockroom.domain.queries import NewProduct
from tests.support.csv_files import HEADER, csv_bytes
from tests.support.products import new_product
from tests.unit.fakes import FakeDatabase, RecordingCache

A, B, C = (f"https://img.example.com/{name}.jpg" for name in "abc")


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
async def alice(db: FakeDatabase) -> User:
    async with db.uow() as uow:
        user = await uow.users.add("alice@example.com", None, False)
        await uow.commit()
    return user


@pytest.fixture
def finished(monkeypatch: pytest.MonkeyPatch) -> list[Import]:
    """What `after_import_finished` was called with, in order."""
    calls: list[Import] = []

    async def record(uow: UnitOfWork, done: Import) -> None:
        calls.append(done)

    monkeypatch.setattr(imports, "after_import_finished", record)
    return calls


async def accept(db: FakeDatabase, owner: User, rows: list[list[str]], per_batch: int = 2) -> str:
    parsed = read_import([csv_bytes([HEADER, *rows])])
    outcome = await imports.accept_import(
        db.uow(), owner, parsed, per_batch=per_batch, render=lambda found: found.id.encode()
    )
    return outcome.response.body.decode()


def batches_of(db: FakeDatabase, import_id: str) -> list[str]:
    found = [(n, b) for b, (i, n, _) in db.tables.import_batches.items() if i == import_id]
    return [batch_id for _, batch_id in sorted(found)]


def products_of(db: FakeDatabase) -> dict[str, Product]:
    return {product.sku or "": product for product in db.tables.products.values()}


async def apply_all(db: FakeDatabase, import_id: str) -> None:
    for batch_id in batches_of(db, import_id):
        await imports.apply_batch(db.uow(), batch_id)


def process_images(db: FakeDatabase, failed: frozenset[str] = frozenset()) -> None:
    """Stand in for the pipeline: every queued job finishes, its image ready or failed."""
    for job in list(db.tables.jobs.values()):
        if job.finished or job.product_image_id is None:
            continue
        bad = job.source_url in failed
        db.tables.jobs[job.id] = replace(
            job, status=JobStatus.FAILED if bad else JobStatus.SUCCEEDED
        )
        db.set_image(
            job.product_image_id,
            status=ImageStatus.FAILED if bad else ImageStatus.READY,
            compressed_url=None if bad else f"https://media.example.com/{job.id}.jpg",
        )


async def test_accepting_stores_rows_and_queues_one_message_per_batch(
    db: FakeDatabase, alice: User
) -> None:
    import_id = await accept(db, alice, [[f"S-{n}", "Lamp", A, "", ""] for n in range(5)])

    accepted = db.tables.imports[import_id]
    assert (accepted.status, accepted.rows, accepted.images_total) == (ImportStatus.PENDING, 5, 5)
    assert accepted.batches == 3
    messages = [message for message, _ in db.tables.outbox.values()]
    assert [m.job_id for m in messages] == batches_of(db, import_id)
    assert {(m.actor, m.queue) for m in messages} == {(imports.APPLY_BATCH, IMPORTS_QUEUE)}
    assert db.tables.products == {}  # nothing written before a worker applies the batches


async def test_a_redelivered_batch_writes_nothing_twice(db: FakeDatabase, alice: User) -> None:
    import_id = await accept(db, alice, [["S-1", "Lamp", A, "", ""], ["S-2", "Desk", B, "", ""]])
    [batch_id] = batches_of(db, import_id)

    await imports.apply_batch(db.uow(), batch_id)
    tables, events = db.tables.copy(), list(db.events)
    await imports.apply_batch(db.uow(), batch_id)

    assert db.events == events  # the second delivery committed nothing
    assert db.tables.products == tables.products
    assert db.tables.jobs == tables.jobs
    assert len(db.tables.jobs) == 2
    assert {job.queue for job in db.tables.jobs.values()} == {IMPORTS_QUEUE}
    assert set(db.tables.job_imports.values()) == {import_id}
    queued = {m.actor for m, _ in db.tables.outbox.values() if m.queue == IMPORTS_QUEUE}
    assert queued == {imports.APPLY_BATCH, PROCESS_IMPORT_IMAGE}
    assert db.tables.imports[import_id].rows_done == 2


async def test_an_existing_sku_is_updated_by_the_patch_rule(db: FakeDatabase, alice: User) -> None:
    existing = await new_product(
        db.uow(),
        alice,
        NewProduct(
            product_name="Old",
            product_price=Decimal("9.50"),
            product_description="Kept",
            product_images=(A, B),
            sku="S-1",
        ),
    )
    gone, kept = existing.images
    db.set_image(kept.id, status=ImageStatus.READY, compressed_url="https://m/b.jpg")
    db.set_image(gone.id, status=ImageStatus.READY, output_key="img/a", compressed_url="x")
    cache = RecordingCache(db)
    parsed = read_import([csv_bytes([HEADER[:3], ["S-1", "New", f"{B},{C}"]])])
    outcome = await imports.accept_import(
        db.uow(), alice, parsed, per_batch=10, render=lambda found: found.id.encode()
    )
    import_id = outcome.response.body.decode()

    await imports.apply_batch(db.uow(), batches_of(db, import_id)[0])

    product = db.tables.products[existing.id]
    assert (product.product_name, product.product_price) == ("New", Decimal("9.50"))
    assert product.product_description == "Kept"  # no Description column: left as it is
    assert product.product_images == [B, C]
    assert product.images[0] == replace(kept, position=0, status=ImageStatus.READY,
                                        compressed_url="https://m/b.jpg")  # fmt: skip
    assert OutputsReleased(("img/a",)) in db.events
    new_jobs = [j for j in db.tables.jobs.values() if j.queue == IMPORTS_QUEUE]
    assert [j.source_url for j in new_jobs] == [C]
    assert [key for key, _ in cache.invalidated] == [existing.id]
    assert db.tables.import_images == {
        (import_id, 2, 0): kept.id,
        (import_id, 2, 1): product.images[1].id,
    }


async def test_an_unchanged_row_changes_nothing(db: FakeDatabase, alice: User) -> None:
    first = await accept(db, alice, [["S-1", "Lamp", A, "5", "Brass"]])
    await apply_all(db, first)
    before = products_of(db)["S-1"]
    cache = RecordingCache(db)

    again = await accept(db, alice, [["S-1", "Lamp", A, "5", "Brass"]])
    await imports.apply_batch(db.uow(), batches_of(db, again)[0])

    assert products_of(db)["S-1"] == before
    assert cache.invalidated == []
    assert len(db.tables.jobs) == 1


async def test_an_import_without_images_finishes_with_its_last_batch(
    db: FakeDatabase, alice: User, finished: list[Import]
) -> None:
    import_id = await accept(db, alice, [[f"S-{n}", "Lamp", "", "1", ""] for n in range(3)])

    await apply_all(db, import_id)

    done = db.tables.imports[import_id]
    assert done.status is ImportStatus.COMPLETED
    assert (done.rows_done, done.batches_done) == (3, 2)
    assert done.finished_at is not None
    assert [call.id for call in finished] == [import_id]
    assert await imports.finish_settled(db.uow, db.lookups()) == 0
    assert len(finished) == 1


async def test_an_import_finishes_once_every_image_is_done(
    db: FakeDatabase, alice: User, finished: list[Import]
) -> None:
    import_id = await accept(
        db, alice, [["S-1", "Lamp", f"{A},{B}", "", ""], ["S-2", "x", C, "", ""]]
    )
    await apply_all(db, import_id)

    assert await imports.finish_settled(db.uow, db.lookups()) == 0  # images still queued
    assert finished == []
    process_images(db, failed=frozenset({B}))
    assert await imports.finish_settled(db.uow, db.lookups()) == 1
    assert await imports.finish_settled(db.uow, db.lookups()) == 0

    [done] = finished
    assert done.status is ImportStatus.COMPLETED_WITH_ERRORS
    assert (done.images_done, done.images_failed) == (2, 1)
    assert db.tables.imports[import_id] == done
    page = []
    async for rows in imports.output_rows(db.uow, import_id, page=1):
        page.extend(rows)
    assert [row.row for row in page] == [2, 3]
    assert page[0].outputs[1] is None
    assert (page[0].outputs[0] or "").startswith("https://media")


async def test_a_batch_failing_on_its_last_attempt_fails_the_import(
    db: FakeDatabase, alice: User, finished: list[Import], monkeypatch: pytest.MonkeyPatch
) -> None:
    import_id = await accept(db, alice, [[f"S-{n}", "Lamp", "", "", ""] for n in range(4)])
    first, second = batches_of(db, import_id)

    async def broken(*args: object) -> None:
        raise RuntimeError("the database said no")

    with monkeypatch.context() as patched:
        patched.setattr(imports, "_write_rows", broken)
        with pytest.raises(RuntimeError):
            await imports.run_batch(db.uow, first, last_attempt=False)
        assert db.tables.imports[import_id].status is ImportStatus.PENDING
        with pytest.raises(RuntimeError):
            await imports.run_batch(db.uow, first, last_attempt=True)

    failed = db.tables.imports[import_id]
    assert failed.status is ImportStatus.FAILED
    assert failed.error == "rows could not be written (batch 1)"
    assert [call.status for call in finished] == [ImportStatus.FAILED]
    await imports.run_batch(db.uow, second, last_attempt=False)
    assert db.tables.products == {}  # the batches left are skipped
    assert await imports.requeue_batches(db.uow()) == 0


async def test_requeue_queues_again_only_the_batches_not_applied(
    db: FakeDatabase, alice: User
) -> None:
    import_id = await accept(db, alice, [[f"S-{n}", "Lamp", "", "", ""] for n in range(5)])
    applied, *waiting = batches_of(db, import_id)
    await imports.apply_batch(db.uow(), applied)
    before = len(db.tables.outbox)

    assert await imports.requeue_batches(db.uow()) == 2

    again = [m.job_id for m, _ in list(db.tables.outbox.values())[before:]]
    assert again == waiting
    for batch_id in again:
        await imports.apply_batch(db.uow(), batch_id)
    assert db.tables.imports[import_id].status is ImportStatus.COMPLETED
    assert sorted(products_of(db)) == [f"S-{n}" for n in range(5)]


async def test_another_users_import_is_not_found(db: FakeDatabase, alice: User) -> None:
    import_id = await accept(db, alice, [["S-1", "Lamp", "", "", ""]])
    async with db.uow() as uow:
        bob = await uow.users.add("bob@example.com", None, False)
        root = await uow.users.add("root@example.com", None, True)
        await uow.commit()

    with pytest.raises(ImportNotFound):
        await imports.get_import(db.uow(), bob, import_id)
    assert (await imports.get_import(db.uow(), root, import_id)).id == import_id
    assert (await imports.list_imports(db.uow(), bob)).items == []
    assert [i.id for i in (await imports.list_imports(db.uow(), root)).items] == [import_id]

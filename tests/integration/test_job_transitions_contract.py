"""A job's start and success: `AsyncpgJobTransitions` (one hand-written statement each, on a
bare asyncpg pool) writes and returns exactly what the unit-of-work implementation does,
through every case the pipeline meets; a database it cannot reach is DatabaseUnavailable."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import bootstrapped
from tests.support.products import new_product
from tests.support.services import free_port
from tests.unit.fakes import FakeDatabase

from stockroom.db.asyncpg_pool import LazyAsyncpgPool
from stockroom.db.job_transitions import AsyncpgJobTransitions, UnitOfWorkJobTransitions
from stockroom.db.tables import image_jobs, product_images, products
from stockroom.domain import users
from stockroom.domain.errors import DatabaseUnavailable
from stockroom.domain.events import DomainEvent, ImageChanged, JobChanged
from stockroom.domain.image_jobs import IMAGES_QUEUE, new_job_id
from stockroom.domain.models import ImageJob, ImageResult, JobKind, JobStatus
from stockroom.domain.ports import JobTransitions, StartedJob
from stockroom.domain.queries import NewProduct
from stockroom.services import Services

pytestmark = pytest.mark.postgres

RESULT = ImageResult("ab/cd.jpg", "http://testserver/media/ab/cd.jpg", 640, 480, 9_000, 3_000)


@dataclasses.dataclass
class Scene:
    product_id: int
    image_ids: list[int]
    job_ids: list[str]  # one per image, in image order
    standalone_job_id: str


async def scene(services: Services, name: str) -> Scene:
    """A product with three queued image jobs, and a standalone job of the same user."""
    user, _ = await users.create_user(services.uow(), email=f"{name}@example.com", name=name)
    draft = NewProduct(
        product_name=name,
        product_price=Decimal("9.99"),
        product_images=tuple(f"https://img.example.com/{n}.jpg" for n in range(3)),
    )
    product = await new_product(services.uow(), user, draft)
    standalone = ImageJob(
        id=new_job_id(),
        user_id=user.id,
        kind=JobKind.STANDALONE,
        status=JobStatus.QUEUED,
        queue=IMAGES_QUEUE,
        operations=[{"op": "resize", "width": 10, "height": 10}],
        created_at=datetime.now(UTC),
        source_url="https://img.example.com/standalone.jpg",
    )
    async with services.uow() as uow:
        await uow.image_jobs.add(standalone)
        await uow.commit()
    image_ids = [image.id for image in product.images]
    async with services.engine.connect() as conn:
        rows = await conn.execute(
            select(image_jobs.c.id, image_jobs.c.product_image_id).where(
                image_jobs.c.product_id == product.id
            )
        )
        job_by_image = {row.product_image_id: row.id for row in rows}
    return Scene(product.id, image_ids, [job_by_image[i] for i in image_ids], standalone.id)


async def delete_image(services: Services, image_id: int) -> None:
    """What a PATCH replacing the image does to it: the job's product_image_id goes NULL."""
    async with services.uow() as uow:
        await uow.products.delete_images([image_id])
        await uow.commit()


def same_scene(value: Any, s: Scene, key: str | None = None) -> Any:
    """Ids and timestamps replaced by what they stand for, so two scenes compare equal.
    `key` is the column or field the value came from (None: a bare returned value)."""
    if isinstance(value, dict):
        return {k: same_scene(v, s, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(same_scene(v, s, key) for v in value)
    if isinstance(value, datetime):
        return "<time>"
    if value is None or isinstance(value, bool):
        return value
    if key == "user_id":
        return "<user>"
    if key in ("product_id", None) and value == s.product_id:
        return "<product>"
    if key in ("product_image_id", "id") and value in s.image_ids:
        return f"<image {s.image_ids.index(value)}>"
    if key in ("id", "job_id") and value in s.job_ids:
        return f"<job {s.job_ids.index(value)}>"
    if key == "id" and value == s.standalone_job_id:
        return "<standalone>"
    return value


async def play(services: Services, transitions: JobTransitions, s: Scene) -> list[Any]:
    """Every case, in an order that exercises each guard; returns what each step returned."""
    job0, job1, job2 = s.job_ids
    returned: list[Any] = []

    async def record(value: StartedJob | tuple[bool, int | None] | None) -> None:
        returned.append(dataclasses.asdict(value) if isinstance(value, StartedJob) else value)

    await record(await transitions.start(job0))  # queued -> processing, image too
    await record(await transitions.start(job0))  # a redelivery: attempts 2
    await record(await transitions.succeed(job0, s.image_ids[0], RESULT))  # written
    await record(await transitions.succeed(job0, s.image_ids[0], RESULT))  # not twice
    await record(await transitions.start(job0))  # finished: nothing to do
    await delete_image(services, s.image_ids[1])
    await record(await transitions.start(job1))  # its image is gone: no product touched
    await record(await transitions.start(job2))
    await delete_image(services, s.image_ids[2])  # replaced while it was processed
    await record(await transitions.succeed(job2, s.image_ids[2], RESULT))  # job only
    await record(await transitions.start(s.standalone_job_id))
    await record(await transitions.succeed(s.standalone_job_id, None, RESULT))
    await record(await transitions.start("0" * 32))  # no such job
    await record(await transitions.succeed("0" * 32, None, RESULT))
    return returned


async def rows(services: Services, s: Scene) -> dict[str, Any]:
    async with services.engine.connect() as conn:
        jobs = await conn.execute(
            select(image_jobs)
            .where(image_jobs.c.id.in_([*s.job_ids, s.standalone_job_id]))
            .order_by(image_jobs.c.id)
        )
        images = await conn.execute(
            select(product_images)
            .where(product_images.c.product_id == s.product_id)
            .order_by(product_images.c.id)
        )
        product = (await conn.execute(select(products).where(products.c.id == s.product_id))).one()
    by_id = {row.id: dict(row._mapping) for row in jobs}
    return {
        "jobs": [by_id[i] for i in [*s.job_ids, s.standalone_job_id]],
        "images": [dict(row._mapping) for row in images],
        "product_touched": product.updated_at > product.created_at,
    }


async def test_one_statement_each_writes_and_returns_what_the_unit_of_work_does(
    pg_services: Services,
) -> None:
    fast = pg_services.transitions
    assert isinstance(fast, AsyncpgJobTransitions)
    reference = UnitOfWorkJobTransitions(pg_services.uow)
    s_ref, s_fast = await scene(pg_services, "reference"), await scene(pg_services, "fast")

    expected = same_scene(await play(pg_services, reference, s_ref), s_ref)
    returned = same_scene(await play(pg_services, fast, s_fast), s_fast)
    for step, (got, want) in enumerate(zip(returned, expected, strict=True)):
        assert got == want, f"step {step}"
    assert same_scene(await rows(pg_services, s_fast), s_fast) == same_scene(
        await rows(pg_services, s_ref), s_ref
    )

    # And what they agree on is what the pipeline relies on.
    started, again, written, not_twice, finished = returned[:5]
    assert started["job"]["status"] == JobStatus.PROCESSING
    assert (started["job"]["attempts"], again["job"]["attempts"]) == (1, 2)
    assert started["product_id"] == "<product>"
    assert (written, not_twice, finished) == ((True, "<product>"), (False, None), None)
    gone, _, replaced, standalone, standalone_done, missing, missing_done = returned[5:]
    assert (gone["job"]["product_image_id"], gone["product_id"]) == (None, None)
    assert replaced == (True, None)
    assert (standalone["job"]["kind"], standalone["product_id"]) == (JobKind.STANDALONE, None)
    assert standalone_done == (True, None)
    assert (missing, missing_done) == (None, (False, None))
    state = await rows(pg_services, s_fast)
    assert [job["status"] for job in state["jobs"]] == [
        "succeeded",
        "processing",
        "succeeded",
        "succeeded",
    ]
    assert state["jobs"][0]["output_url"] == RESULT.output_url
    assert [(image["status"], image["compressed_url"]) for image in state["images"]] == [
        ("ready", RESULT.output_url)
    ]  # images 1 and 2 were deleted
    assert state["product_touched"]


async def test_the_events_carry_the_rows_the_live_status_would_read(
    pg_services: Services, postgres_url: str
) -> None:
    """The statements return the job and image rows as they left them; the live status
    publishes those instead of reading them, so each must equal a read made right then."""
    pairs: list[tuple[object, object]] = []

    async def compare(events: Sequence[DomainEvent]) -> None:
        for event in events:
            if isinstance(event, JobChanged):
                pairs.append((event.seen, await pg_services.lookups.job(event.job_id)))
            elif isinstance(event, ImageChanged):
                read = await pg_services.lookups.image(event.product_id, event.image_id)
                pairs.append((event.seen, read))

    pool = LazyAsyncpgPool(postgres_url, 2)
    transitions = AsyncpgJobTransitions(pool, UnitOfWorkJobTransitions(pg_services.uow), compare)
    s = await scene(pg_services, "seen")
    try:
        await play(pg_services, transitions, s)
    finally:
        await pool.close()
    assert len(pairs) == 7  # 3 image starts, 1 image success, start and success standalone, 1 gone
    for seen, read in pairs:
        assert seen is not None
        assert seen == read


async def test_an_unreachable_database_is_database_unavailable() -> None:
    pool = LazyAsyncpgPool(f"postgresql://postgres@127.0.0.1:{free_port()}/test", 2)
    transitions = AsyncpgJobTransitions(pool, UnitOfWorkJobTransitions(FakeDatabase().uow))
    try:
        with pytest.raises(DatabaseUnavailable):
            await transitions.start("0" * 32)
        with pytest.raises(DatabaseUnavailable):
            await transitions.succeed("0" * 32, None, RESULT)
    finally:
        await pool.close()


async def test_sqlite_goes_through_the_unit_of_work(sqlite_url: str, tmp_path: Path) -> None:
    async with bootstrapped(sqlite_url, tmp_path / "media") as services:
        assert isinstance(services.transitions, UnitOfWorkJobTransitions)

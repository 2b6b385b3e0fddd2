"""In-memory twins of the ports, for service tests with no I/O.

`FakeDatabase` holds the committed rows; each `FakeUnitOfWork` works on a copy of them and
publishes the copy only on `commit()`, so an exception (or a missing commit) drops every
change, and `after_commit` callbacks run only once the change is visible.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from stockroom.db.lookups import UnitOfWorkLookups
from stockroom.domain.errors import (
    EmailTaken,
    FieldError,
    IdempotentRequestInFlight,
    InvalidInput,
    SkuTaken,
)
from stockroom.domain.models import (
    ApiToken,
    ImageJob,
    ImageResult,
    ImageStatus,
    JobKind,
    JobStatus,
    OutboxMessage,
    Product,
    ProductImage,
    User,
)
from stockroom.domain.ports import AfterCommit, CachedProduct
from stockroom.domain.products import parse_sort_value
from stockroom.domain.queries import (
    UNSET,
    IdempotencyRecord,
    NewProduct,
    ProductPatch,
    ProductQuery,
    ProductSort,
)

IdempotencyId = tuple[int, str, str]


class FakeClock:
    """Strictly increasing times, so `created_at` orders rows the way inserts did."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=next(self._ticks))


@dataclass
class Tables:
    users: dict[int, User] = field(default_factory=dict)
    tokens: dict[int, tuple[ApiToken, str]] = field(default_factory=dict)  # (token, hash)
    products: dict[int, Product] = field(default_factory=dict)
    idempotency: dict[IdempotencyId, IdempotencyRecord] = field(default_factory=dict)
    jobs: dict[str, ImageJob] = field(default_factory=dict)
    outbox: dict[int, tuple[OutboxMessage, datetime | None]] = field(default_factory=dict)

    def copy(self) -> Tables:
        """Rows are frozen dataclasses, so copying the dicts isolates a transaction."""
        return Tables(**{name: dict(rows) for name, rows in vars(self).items()})


@dataclass
class FakeDatabase:
    """The committed state, shared by every unit of work made from it."""

    tables: Tables = field(default_factory=Tables)
    clock: Callable[[], datetime] = field(default_factory=FakeClock)
    # Like database sequences: ids are never reused, even after a rollback.
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    commits: int = 0

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)

    def lookups(self) -> UnitOfWorkLookups:
        return UnitOfWorkLookups(self.uow)

    def set_image(self, image_id: int, **values: Any) -> None:
        """Stand in for the image pipeline: change a committed image row."""
        for product in self.tables.products.values():
            images = tuple(
                replace(image, **values) if image.id == image_id else image
                for image in product.images
            )
            self.tables.products[product.id] = replace(product, images=images)


class FakeUserRepository:
    def __init__(self, db: FakeDatabase, tables: Tables) -> None:
        self._db, self._t = db, tables

    async def add(self, email: str, name: str | None, is_admin: bool) -> User:
        if await self.by_email(email) is not None:
            raise EmailTaken()
        user = User(next(self._db.ids), email, name, is_admin, self._db.clock())
        self._t.users[user.id] = user
        return user

    async def get(self, user_id: int) -> User | None:
        return self._t.users.get(user_id)

    async def by_email(self, email: str) -> User | None:
        return next((u for u in self._t.users.values() if u.email == email), None)

    async def by_token_hash(self, token_hash: str) -> User | None:
        owners = (t.user_id for t, stored in self._t.tokens.values() if stored == token_hash)
        return self._t.users.get(next(owners, 0))

    async def exists(self, user_id: int) -> bool:
        return user_id in self._t.users


class FakeTokenRepository:
    def __init__(self, db: FakeDatabase, tables: Tables) -> None:
        self._db, self._t = db, tables

    async def add(self, user_id: int, token_hash: str, name: str | None) -> ApiToken:
        token = ApiToken(next(self._db.ids), user_id, name, self._db.clock())
        self._t.tokens[token.id] = (token, token_hash)
        return token

    async def delete(self, user_id: int, token_id: int) -> str | None:
        row = self._t.tokens.get(token_id)
        if row is None or row[0].user_id != user_id:
            return None
        del self._t.tokens[token_id]
        return row[1]

    async def delete_named(self, user_id: int, name: str) -> list[str]:
        named = [
            (token.id, stored)
            for token, stored in self._t.tokens.values()
            if token.user_id == user_id and token.name == name
        ]
        for token_id, _stored in named:
            del self._t.tokens[token_id]
        return [stored for _token_id, stored in named]


class FakeProductRepository:
    def __init__(self, db: FakeDatabase, tables: Tables) -> None:
        self._db, self._t = db, tables
        self.searches: list[ProductQuery] = []  # what the service asked for, to assert on

    async def add(self, draft: NewProduct, user_id: int) -> int:
        now = self._db.clock()
        product = Product(
            id=next(self._db.ids),
            user_id=user_id,
            sku=draft.sku,
            product_name=draft.product_name,
            product_description=draft.product_description,
            product_price=draft.product_price,
            created_at=now,
            updated_at=now,
        )
        self._check_sku(product)
        self._t.products[product.id] = product
        return product.id

    async def get(self, product_id: int) -> Product | None:
        return self._t.products.get(product_id)

    async def search(self, query: ProductQuery) -> list[Product]:
        self.searches.append(query)
        rows = [p for p in self._t.products.values() if _matches(p, query)]
        descending = query.sort in (ProductSort.NEWEST, ProductSort.DEAREST)
        rows.sort(key=lambda p: _sort_key(p, query.sort), reverse=descending)
        if query.after is not None:  # keyset: strictly past the previous page's last row
            boundary = (parse_sort_value(query.sort, query.after.value), query.after.id)
            keyed = [(_sort_key(p, query.sort), p) for p in rows]
            rows = [p for k, p in keyed if (k < boundary if descending else k > boundary)]
        return rows[: query.limit]

    async def lock(self, product_id: int) -> None:
        return None  # one transaction at a time here

    async def update(self, product_id: int, patch: ProductPatch) -> None:
        values: dict[str, Any] = {
            name: getattr(patch, name)
            for name in ("product_name", "product_description", "product_price", "sku", "user_id")
            if getattr(patch, name) is not UNSET
        }
        values["updated_at"] = self._db.clock()
        product = replace(self._t.products[product_id], **values)
        self._check_sku(product)
        self._t.products[product_id] = product

    async def delete(self, product_id: int) -> None:
        await self.delete_images([i.id for i in self._t.products[product_id].images])
        del self._t.products[product_id]

    async def add_images(self, product_id: int, images: Sequence[tuple[int, str]]) -> list[int]:
        new = [ProductImage(next(self._db.ids), position, url) for position, url in images]
        self._set_images(self._t.products[product_id], [*self._t.products[product_id].images, *new])
        return [image.id for image in new]

    async def record_image_result(self, image_id: int, result: ImageResult) -> int | None:
        return self._change_image(
            image_id,
            status=ImageStatus.READY,
            compressed_url=result.output_url,
            **_result_fields(result),
        )

    async def record_image_failure(self, image_id: int, error: str, error_code: str) -> int | None:
        return self._change_image(
            image_id, status=ImageStatus.FAILED, error=error, error_code=error_code
        )

    async def set_image_status(self, image_id: int, status: ImageStatus) -> int | None:
        return self._change_image(image_id, status=status, error=None, error_code=None)

    async def output_key_in_use(self, key: str) -> bool:
        """An image row, or a standalone job (whose result has no image row), holds it."""
        images = (i for p in self._t.products.values() for i in p.images)
        standalone = (j for j in self._t.jobs.values() if j.kind is JobKind.STANDALONE)
        return any(image.output_key == key for image in images) or any(
            job.output_key == key for job in standalone
        )

    async def move_images(self, moves: Sequence[tuple[int, int]]) -> None:
        positions = dict(moves)
        for product in list(self._t.products.values()):
            images = [replace(i, position=positions.get(i.id, i.position)) for i in product.images]
            self._set_images(product, images)

    async def delete_images(self, image_ids: Sequence[int]) -> None:
        for product in list(self._t.products.values()):
            self._set_images(product, [i for i in product.images if i.id not in image_ids])
        for job in list(self._t.jobs.values()):  # image_jobs.product_image_id ON DELETE SET NULL
            if job.product_image_id in image_ids:
                self._t.jobs[job.id] = replace(job, product_image_id=None)

    def _change_image(self, image_id: int, **values: Any) -> int | None:
        """Change one image row; its product's `updated_at` moves too (the ETag changes)."""
        for product in list(self._t.products.values()):
            if any(image.id == image_id for image in product.images):
                images = [replace(i, **values) if i.id == image_id else i for i in product.images]
                self._set_images(replace(product, updated_at=self._db.clock()), images)
                return product.id
        return None

    def _set_images(self, product: Product, images: list[ProductImage]) -> None:
        ordered = tuple(sorted(images, key=lambda i: (i.position, i.id)))
        self._t.products[product.id] = replace(product, images=ordered)

    def _check_sku(self, product: Product) -> None:
        """The (user_id, sku) unique index."""
        if product.sku is not None and any(
            p.id != product.id and p.user_id == product.user_id and p.sku == product.sku
            for p in self._t.products.values()
        ):
            raise SkuTaken()


class FakeIdempotencyRepository:
    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def get(self, user_id: int, scope: str, key: str) -> IdempotencyRecord | None:
        return self._t.idempotency.get((user_id, scope, key))

    async def add(self, record: IdempotencyRecord) -> None:
        ident = (record.user_id, record.scope, record.key)
        if ident in self._t.idempotency:  # the unique index a concurrent twin would hit
            raise IdempotentRequestInFlight()
        self._t.idempotency[ident] = record

    async def delete(self, user_id: int, scope: str, key: str) -> None:
        self._t.idempotency.pop((user_id, scope, key), None)

    async def purge_expired(self, now: datetime, limit: int) -> int:
        expired = sorted(
            (record.expires_at, ident)
            for ident, record in self._t.idempotency.items()
            if record.expires_at < now
        )[:limit]
        for _, ident in expired:
            del self._t.idempotency[ident]
        return len(expired)


class FakeImageJobRepository:
    def __init__(self, db: FakeDatabase, tables: Tables) -> None:
        self._db, self._t = db, tables

    async def add(self, job: ImageJob) -> None:
        self._t.jobs[job.id] = job

    async def add_many(self, jobs: Sequence[ImageJob]) -> None:
        for job in jobs:
            await self.add(job)

    async def get(self, job_id: str) -> ImageJob | None:
        return self._t.jobs.get(job_id)

    async def start(self, job_id: str) -> ImageJob | None:
        job = self._t.jobs.get(job_id)
        if job is None or job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING):
            return None
        job = replace(
            job, status=JobStatus.PROCESSING, attempts=job.attempts + 1, started_at=self._db.clock()
        )
        self._t.jobs[job_id] = job
        return job

    async def mark_succeeded(self, job_id: str, result: ImageResult) -> bool:
        return self._finish(
            job_id,
            status=JobStatus.SUCCEEDED,
            output_url=result.output_url,
            **_result_fields(result),
        )

    async def mark_failed(
        self, job_id: str, error: str, error_code: str | None, dead_lettered_at: datetime | None
    ) -> bool:
        return self._finish(
            job_id,
            status=JobStatus.FAILED,
            error=error,
            error_code=error_code,
            dead_lettered_at=dead_lettered_at,
        )

    async def record_failed_attempt(self, job_id: str, error: str, error_code: str) -> None:
        self._change(job_id, error=error, error_code=error_code)

    async def queue_upload(self, job_id: str) -> bool:
        job = self._t.jobs.get(job_id)
        if job is None or job.status is not JobStatus.UPLOADING:
            return False
        self._change(job_id, status=JobStatus.QUEUED)
        return True

    async def expire_uploads(self, now: datetime, error: str, error_code: str) -> list[str]:
        expired = [
            job.id
            for job in self._t.jobs.values()
            if job.status is JobStatus.UPLOADING
            and job.upload_expires_at is not None
            and job.upload_expires_at < now
        ]
        for job_id in expired:
            self._change(
                job_id, status=JobStatus.FAILED, error=error, error_code=error_code, finished_at=now
            )
        return expired

    async def reset_for_redrive(self, job_id: str) -> None:
        self._change(
            job_id,
            status=JobStatus.QUEUED,
            attempts=0,
            finished_at=None,
            dead_lettered_at=None,
        )

    def _finish(self, job_id: str, **values: Any) -> bool:
        job = self._t.jobs.get(job_id)
        if job is None or job.finished:
            return False
        self._change(job_id, finished_at=self._db.clock(), **values)
        return True

    def _change(self, job_id: str, **values: Any) -> None:
        self._t.jobs[job_id] = replace(self._t.jobs[job_id], **values)

    async def search(
        self,
        *,
        user_id: int | None,
        status: JobStatus | None = None,
        dead_lettered: bool = False,
        standalone_only: bool = False,
        limit: int = 20,
        after: str | None = None,
    ) -> list[ImageJob]:
        """Newest first; `after` is the id of the previous page's last job."""
        jobs = sorted(self._t.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
        if after is not None:
            ids = [job.id for job in jobs]
            if after not in ids:
                raise InvalidInput(
                    "invalid cursor", [FieldError("cursor", "is not a cursor from this list")]
                )
            jobs = jobs[ids.index(after) + 1 :]
        return [
            job
            for job in jobs
            if (user_id is None or job.user_id == user_id)
            and (status is None or job.status is status)
            and (not dead_lettered or job.dead_lettered_at is not None)
            and (not standalone_only or job.kind is JobKind.STANDALONE)
        ][:limit]

    async def unfinished(self, older_than: datetime | None = None) -> list[ImageJob]:
        return [
            job
            for job in self._t.jobs.values()
            if not job.finished
            and (older_than is None or (job.started_at or job.created_at) < older_than)
        ]

    async def counts(self) -> dict[str, int]:
        jobs = list(self._t.jobs.values())
        return {
            "queued": sum(job.status is JobStatus.QUEUED for job in jobs),
            "processing": sum(job.status is JobStatus.PROCESSING for job in jobs),
            "dead_lettered": sum(job.dead_lettered_at is not None for job in jobs),
            "outbox_unpublished": sum(at is None for _, at in self._t.outbox.values()),
        }


class FakeOutboxRepository:
    def __init__(self, db: FakeDatabase, tables: Tables) -> None:
        self._db, self._t = db, tables

    async def add(self, job_id: str, actor: str, queue: str, request_id: str | None) -> None:
        message = OutboxMessage(next(self._db.ids), job_id, actor, queue, request_id)
        self._t.outbox[message.id] = (message, None)

    async def add_many(
        self, job_ids: Sequence[str], actor: str, queue: str, request_id: str | None
    ) -> None:
        for job_id in job_ids:
            await self.add(job_id, actor, queue, request_id)

    async def claim(self, limit: int) -> list[OutboxMessage]:
        pending = [message for message, published in self._t.outbox.values() if published is None]
        return sorted(pending, key=lambda m: m.id)[:limit]

    async def mark_published(self, ids: Sequence[int]) -> None:
        for message_id in ids:
            self._t.outbox[message_id] = (self._t.outbox[message_id][0], self._db.clock())


class FakeUnitOfWork:
    users: FakeUserRepository
    tokens: FakeTokenRepository
    products: FakeProductRepository
    idempotency: FakeIdempotencyRepository
    image_jobs: FakeImageJobRepository
    outbox: FakeOutboxRepository

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._tables: Tables | None = None
        self._after_commit: list[AfterCommit] = []
        self.committed = False

    async def __aenter__(self) -> FakeUnitOfWork:
        self._tables = self._db.tables.copy()
        self._after_commit = []
        self.users = FakeUserRepository(self._db, self._tables)
        self.tokens = FakeTokenRepository(self._db, self._tables)
        self.products = FakeProductRepository(self._db, self._tables)
        self.idempotency = FakeIdempotencyRepository(self._tables)
        self.image_jobs = FakeImageJobRepository(self._db, self._tables)
        self.outbox = FakeOutboxRepository(self._db, self._tables)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tables = None  # rollback: the working copy is dropped unless it was published

    async def commit(self) -> None:
        assert self._tables is not None, "commit() outside `async with uow:`"
        self._db.tables = self._tables.copy()
        self._db.commits += 1
        self.committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            await callback()

    def after_commit(self, callback: AfterCommit) -> None:
        self._after_commit.append(callback)


class RecordingCache:
    """A ProductCache (product ids) or TokenCache (token hashes) that stores nothing and
    records invalidations with the product the database held at that moment, to show they
    ran after the commit."""

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.invalidated: list[tuple[int | str, Product | None]] = []

    async def read(self, key: int | str) -> CachedProduct:
        return CachedProduct(body=None, token=None)

    async def fill(self, key: int | str, body: bytes, token: str | None) -> None:
        return None

    async def invalidate(self, key: int | str) -> None:
        product = self._db.tables.products.get(key) if isinstance(key, int) else None
        self.invalidated.append((key, product))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _sort_key(product: Product, sort: ProductSort) -> tuple[Any, int]:
    if sort in (ProductSort.NEWEST, ProductSort.OLDEST):
        return product.created_at, product.id
    if sort in (ProductSort.CHEAPEST, ProductSort.DEAREST):
        return product.product_price, product.id
    return product.product_name, product.id


def _matches(product: Product, query: ProductQuery) -> bool:
    return (
        product.user_id == query.owner_id
        and (query.min_price is None or product.product_price >= query.min_price)
        and (query.max_price is None or product.product_price <= query.max_price)
        and (not query.name or query.name.casefold() in product.product_name.casefold())
        and (query.sku is None or product.sku == query.sku)
    )


def _result_fields(result: ImageResult) -> dict[str, Any]:
    """What a result sets on an image and on its job alike (db/products.py result_columns)."""
    return {
        "output_key": result.output_key,
        "width": result.width,
        "height": result.height,
        "bytes_in": result.bytes_in,
        "bytes_out": result.bytes_out,
        "error": None,
        "error_code": None,
    }

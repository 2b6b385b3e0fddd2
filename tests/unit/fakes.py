"""In-memory twins of the ports, for service tests with no I/O.

`FakeDatabase` holds the committed rows; each `FakeUnitOfWork` works on a copy of them and
publishes the copy only on `commit()`, so an exception (or a missing commit) drops every
change, and recorded events reach the effects only once the change is visible.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from stockroom.db.admissions import UnitOfWorkAdmissions
from stockroom.db.lookups import UnitOfWorkLookups
from stockroom.domain.csv_import import ImportRow
from stockroom.domain.errors import (
    EmailTaken,
    FieldError,
    IdempotentRequestInFlight,
    InvalidInput,
    SkuTaken,
)
from stockroom.domain.events import DomainEvent, ProductChanged, TokenRevoked
from stockroom.domain.models import (
    ApiToken,
    ImageJob,
    ImageResult,
    ImageStatus,
    Import,
    ImportStatus,
    JobKind,
    JobStatus,
    OutboxMessage,
    Product,
    ProductImage,
    User,
    WebhookAttempt,
    WebhookMessage,
    WebhookStatus,
)
from stockroom.domain.ports import (
    CachedProduct,
    ImageTally,
    OutputRow,
    ProductFields,
    RunEffects,
)
from stockroom.domain.products import parse_sort_value
from stockroom.domain.queries import (
    UNSET,
    IdempotencyRecord,
    NewProduct,
    ProductPatch,
    ProductQuery,
    ProductSort,
)
from stockroom.domain.webhooks import DeliveryResult

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
    imports: dict[str, Import] = field(default_factory=dict)
    import_rows: dict[tuple[str, int], tuple[int, ImportRow]] = field(default_factory=dict)
    import_batches: dict[str, tuple[str, int, datetime | None]] = field(default_factory=dict)
    import_images: dict[tuple[str, int, int], int] = field(default_factory=dict)
    job_imports: dict[str, str] = field(default_factory=dict)  # image_jobs.import_id
    webhooks: dict[str, WebhookMessage] = field(default_factory=dict)
    webhook_attempts: dict[int, tuple[WebhookAttempt, int, str | None, str | None]] = field(
        default_factory=dict
    )  # attempt, user id, job id, import id
    outbox_not_before: dict[int, datetime] = field(default_factory=dict)

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
    # Every committed unit of work's events, in order; and what runs them, when given.
    events: list[DomainEvent] = field(default_factory=list)
    effects: RunEffects | None = None

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)

    def lookups(self) -> UnitOfWorkLookups:
        return UnitOfWorkLookups(self.uow)

    def admissions(self) -> UnitOfWorkAdmissions:
        return UnitOfWorkAdmissions(self.uow)

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

    async def add(self, draft: NewProduct, user_id: int) -> Product:
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
        return product

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

    async def add(
        self,
        job_id: str,
        actor: str,
        queue: str,
        request_id: str | None,
        *,
        not_before: datetime | None = None,
    ) -> None:
        message = OutboxMessage(next(self._db.ids), job_id, actor, queue, request_id)
        self._t.outbox[message.id] = (message, None)
        if not_before is not None:
            self._t.outbox_not_before[message.id] = not_before

    async def add_many(
        self,
        job_ids: Sequence[str],
        actor: str,
        queue: str,
        request_id: str | None,
        *,
        not_before: datetime | None = None,
    ) -> None:
        for job_id in job_ids:
            await self.add(job_id, actor, queue, request_id, not_before=not_before)

    async def claim(self, limit: int) -> list[OutboxMessage]:
        now = self._db.clock()
        pending = [
            message
            for message, published in self._t.outbox.values()
            if published is None and self._t.outbox_not_before.get(message.id, now) <= now
        ]
        return sorted(pending, key=lambda m: m.id)[:limit]

    async def mark_published(self, ids: Sequence[int]) -> None:
        for message_id in ids:
            self._t.outbox[message_id] = (self._t.outbox[message_id][0], self._db.clock())


class FakeWebhookRepository:
    def __init__(self, db: FakeDatabase, tables: Tables) -> None:
        self._db, self._t = db, tables

    async def add(self, message: WebhookMessage) -> None:
        self._t.webhooks[message.id] = message

    async def get(self, message_id: str) -> WebhookMessage | None:
        return self._t.webhooks.get(message_id)

    async def record_attempt(
        self,
        message: WebhookMessage,
        result: DeliveryResult,
        status: WebhookStatus,
        at: datetime,
    ) -> bool:
        stored = self._t.webhooks.get(message.id)
        if (
            stored is None
            or stored.attempts != message.attempts
            or stored.status is not WebhookStatus.PENDING
        ):
            return False
        attempt = message.attempts + 1
        self._t.webhooks[message.id] = replace(
            stored,
            attempts=attempt,
            status=status,
            finished_at=None if status is WebhookStatus.PENDING else at,
        )
        record = WebhookAttempt(
            next(self._db.ids),
            message.id,
            message.type,
            message.url,
            attempt,
            result.status_code,
            result.error,
            at,
        )
        self._t.webhook_attempts[record.id] = (
            record,
            message.user_id,
            message.job_id,
            message.import_id,
        )
        return True

    async def pending(self, created_before: datetime | None = None) -> list[str]:
        waiting = {m.job_id for m, published in self._t.outbox.values() if published is None}
        return [
            message.id
            for message in self._t.webhooks.values()
            if message.status is WebhookStatus.PENDING
            and message.id not in waiting
            and (created_before is None or message.created_at < created_before)
        ]

    async def attempts(
        self,
        *,
        user_id: int | None,
        job_id: str | None = None,
        import_id: str | None = None,
        limit: int = 20,
        after: int | None = None,
    ) -> list[WebhookAttempt]:
        found = [
            attempt
            for attempt, owner, job, imported in self._t.webhook_attempts.values()
            if (user_id is None or owner == user_id)
            and (job_id is None or job == job_id)
            and (import_id is None or imported == import_id)
            and (after is None or attempt.id < after)
        ]
        return sorted(found, key=lambda a: a.id, reverse=True)[:limit]


class FakeImportRepository:
    def __init__(self, db: FakeDatabase, tables: Tables) -> None:
        self._db, self._t = db, tables

    async def add(self, imported: Import) -> None:
        self._t.imports[imported.id] = imported

    async def add_rows(self, import_id: str, rows: Sequence[ImportRow], per_batch: int) -> None:
        for index, row in enumerate(rows):
            self._t.import_rows[(import_id, row.row)] = (index // per_batch, row)

    async def add_batches(self, import_id: str, batch_ids: Sequence[str]) -> None:
        for number, batch_id in enumerate(batch_ids):
            self._t.import_batches[batch_id] = (import_id, number, None)

    async def get(self, import_id: str) -> Import | None:
        return self._t.imports.get(import_id)

    async def search(
        self, *, user_id: int | None, limit: int, after: str | None = None
    ) -> list[Import]:
        found = sorted(self._t.imports.values(), key=lambda i: (i.created_at, i.id), reverse=True)
        if after is not None:
            ids = [i.id for i in found]
            if after not in ids:
                raise InvalidInput(
                    "invalid cursor", [FieldError("cursor", "is not a cursor from this list")]
                )
            found = found[ids.index(after) + 1 :]
        return [i for i in found if user_id is None or i.user_id == user_id][:limit]

    async def claim_batch(self, batch_id: str, now: datetime) -> tuple[str, int] | None:
        batch = self._t.import_batches.get(batch_id)
        if batch is None or batch[2] is not None:
            return None
        self._t.import_batches[batch_id] = (batch[0], batch[1], now)
        return batch[0], batch[1]

    async def batch_rows(self, import_id: str, number: int) -> list[ImportRow]:
        rows = [
            row
            for (owner, _), (batch, row) in self._t.import_rows.items()
            if owner == import_id and batch == number
        ]
        return sorted(rows, key=lambda row: row.row)

    async def batch_applied(self, import_id: str, rows: int, now: datetime) -> Import:
        current = self._t.imports[import_id]
        changed = replace(
            current,
            batches_done=current.batches_done + 1,
            rows_done=current.rows_done + rows,
            status=ImportStatus.PROCESSING,
            started_at=current.started_at or now,
        )
        self._t.imports[import_id] = changed
        return changed

    async def products_by_sku(self, user_id: int, skus: Sequence[str]) -> dict[str, int]:
        wanted = set(skus)
        return {
            p.sku: p.id
            for p in self._t.products.values()
            if p.user_id == user_id and p.sku is not None and p.sku in wanted
        }

    async def lock_products(self, product_ids: Sequence[int]) -> None:
        return None  # one transaction at a time here

    async def products(self, product_ids: Sequence[int]) -> list[Product]:
        return [self._t.products[i] for i in product_ids if i in self._t.products]

    async def add_products(
        self, user_id: int, drafts: Sequence[NewProduct], now: datetime
    ) -> list[int]:
        repository = FakeProductRepository(self._db, self._t)
        return [(await repository.add(draft, user_id)).id for draft in drafts]

    async def update_products(self, changes: Sequence[ProductFields], now: datetime) -> None:
        for change in changes:
            self._t.products[change.product_id] = replace(
                self._t.products[change.product_id],
                product_name=change.product_name,
                product_price=change.product_price,
                product_description=change.product_description,
                updated_at=now,
            )

    async def tag_jobs(self, import_id: str, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self._t.job_imports[job_id] = import_id

    async def link_images(self, import_id: str, links: Sequence[tuple[int, int, int]]) -> None:
        for row, position, image_id in links:
            self._t.import_images[(import_id, row, position)] = image_id

    async def has_unfinished_jobs(self, import_id: str) -> bool:
        return any(
            not self._t.jobs[job_id].finished
            for job_id, owner in self._t.job_imports.items()
            if owner == import_id and job_id in self._t.jobs
        )

    async def tally(self, import_id: str) -> ImageTally:
        statuses = [
            self._image_status(image_id)
            for (owner, _, _), image_id in self._t.import_images.items()
            if owner == import_id
        ]
        return ImageTally(
            done=statuses.count(ImageStatus.READY),
            failed=statuses.count(ImageStatus.FAILED) + statuses.count(None),
            waiting=statuses.count(ImageStatus.PENDING) + statuses.count(ImageStatus.PROCESSING),
        )

    async def finish(
        self,
        import_id: str,
        status: ImportStatus,
        tally: ImageTally,
        now: datetime,
        error: str | None = None,
    ) -> Import | None:
        current = self._t.imports.get(import_id)
        if current is None or current.status.finished:
            return None
        finished = replace(
            current,
            status=status,
            images_done=tally.done,
            images_failed=tally.failed,
            error=error,
            finished_at=now,
        )
        self._t.imports[import_id] = finished
        return finished

    async def settling(self) -> list[str]:
        return [
            i.id
            for i in self._t.imports.values()
            if i.status is ImportStatus.PROCESSING and i.batches_done >= i.batches
        ]

    async def unapplied_batches(
        self, created_before: datetime | None
    ) -> list[tuple[str, str | None]]:
        found = []
        for batch_id, (import_id, number, applied_at) in self._t.import_batches.items():
            owner = self._t.imports[import_id]
            if (
                applied_at is None
                and not owner.status.finished
                and (created_before is None or owner.created_at < created_before)
            ):
                found.append(((owner.created_at, number), batch_id, owner.request_id))
        return [(batch_id, request_id) for _, batch_id, request_id in sorted(found)]

    async def output_rows(self, import_id: str, after_row: int, limit: int) -> list[OutputRow]:
        rows = sorted(
            (row for (owner, number), (_, row) in self._t.import_rows.items()
             if owner == import_id and number > after_row),
            key=lambda row: row.row,
        )[:limit]  # fmt: skip
        return [
            OutputRow(
                row.row,
                row.cells,
                tuple(self._ready_url(import_id, row.row, p) for p in range(len(row.image_urls))),
            )
            for row in rows
        ]

    def _image(self, image_id: int) -> ProductImage | None:
        images = (i for p in self._t.products.values() for i in p.images if i.id == image_id)
        return next(images, None)

    def _image_status(self, image_id: int) -> ImageStatus | None:
        image = self._image(image_id)
        return None if image is None else image.status

    def _ready_url(self, import_id: str, row: int, position: int) -> str | None:
        image_id = self._t.import_images.get((import_id, row, position))
        image = None if image_id is None else self._image(image_id)
        return image.compressed_url if image and image.status is ImageStatus.READY else None


class FakeUnitOfWork:
    users: FakeUserRepository
    tokens: FakeTokenRepository
    products: FakeProductRepository
    idempotency: FakeIdempotencyRepository
    image_jobs: FakeImageJobRepository
    outbox: FakeOutboxRepository
    imports: FakeImportRepository
    webhooks: FakeWebhookRepository

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._tables: Tables | None = None
        self._events: list[DomainEvent] = []
        self.committed = False

    async def __aenter__(self) -> FakeUnitOfWork:
        self._tables = self._db.tables.copy()
        self._events = []
        self.users = FakeUserRepository(self._db, self._tables)
        self.tokens = FakeTokenRepository(self._db, self._tables)
        self.products = FakeProductRepository(self._db, self._tables)
        self.idempotency = FakeIdempotencyRepository(self._tables)
        self.image_jobs = FakeImageJobRepository(self._db, self._tables)
        self.outbox = FakeOutboxRepository(self._db, self._tables)
        self.imports = FakeImportRepository(self._db, self._tables)
        self.webhooks = FakeWebhookRepository(self._db, self._tables)
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
        events, self._events = self._events, []
        self._db.events.extend(events)
        if events and self._db.effects is not None:
            await self._db.effects(events)

    def record(self, event: DomainEvent) -> None:
        self._events.append(event)


class RecordingCache:
    """A ProductCache (product ids) or TokenCache (token hashes) that stores nothing and
    records invalidations with the product the database held at that moment, to show they
    ran after the commit. Made for `db`, it is what `db`'s committed events invalidate."""

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.invalidated: list[tuple[int | str, Product | None]] = []
        db.effects = self.effects

    async def effects(self, events: Sequence[DomainEvent]) -> None:
        for event in events:
            if isinstance(event, ProductChanged):
                await self.invalidate(event.product_id)
            elif isinstance(event, TokenRevoked):
                await self.invalidate(event.token_hash)

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

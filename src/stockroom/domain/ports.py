"""The ports the services talk to; `db/` and `adapters/` implement them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Protocol

from stockroom.domain.csv_import import ImportRow
from stockroom.domain.events import DomainEvent
from stockroom.domain.models import (
    ApiToken,
    ImageJob,
    ImageResult,
    ImageStatus,
    Import,
    ImportStatus,
    JobStatus,
    OutboxMessage,
    OwnedImage,
    Product,
    User,
    WebhookAttempt,
    WebhookMessage,
    WebhookStatus,
)
from stockroom.domain.queries import IdempotencyRecord, NewProduct, ProductPatch, ProductQuery
from stockroom.domain.webhooks import DeliveryResult

RunEffects = Callable[[Sequence[DomainEvent]], Awaitable[None]]
"""What runs a committed write's events (`domain/effects.py` `Effects`)."""


class ImageStore(Protocol):
    """Object storage for processed images, addressed by content-derived keys."""

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` (overwriting is harmless) and return its public URL.

        Raises:
            StorageUnavailable: the backend could not be reached or refused the write.
        """
        ...

    async def get(self, key: str) -> bytes:
        """Return the bytes stored under `key`.

        Raises:
            StorageUnavailable: the backend could not be reached.
            KeyError: nothing is stored under `key`.
        """
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove the keys; absent keys are ignored."""
        ...

    def url_for(self, key: str) -> str:
        """The public URL of `key` (no I/O)."""
        ...

    async def size(self, key: str) -> int | None:
        """The size in bytes of what is stored under `key`, None when nothing is.

        Raises:
            StorageUnavailable: the backend could not be reached.
        """
        ...

    def presigned_put(self, key: str, content_type: str, expires_in: int) -> str | None:
        """A URL the client can PUT `key` to itself, with `Content-Type: content_type`, for
        `expires_in` seconds (no I/O); None when the backend has none (file storage: the API
        signs a URL of its own)."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the backend answers."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CachedProduct:
    """What a cache read returns: the stored bytes (or None on a miss) and the generation
    token to pass back to `fill` so a stale read can never be cached after a write."""

    body: bytes | None
    token: str | None


class ProductCache(Protocol):
    """Cache-aside store of serialized products; never raises to callers (degrades to miss)."""

    async def read(self, product_id: int) -> CachedProduct: ...

    async def fill(self, product_id: int, body: bytes, token: str | None) -> None:
        """Store `body` unless the product was invalidated since `read` returned `token`."""
        ...

    async def invalidate(self, product_id: int) -> None: ...

    async def ping(self) -> None:
        """Raise CacheUnavailable unless the backend answers."""
        ...

    async def close(self) -> None: ...


class TokenCache(Protocol):
    """Cache-aside store of the user behind a token, keyed by the token's full hash; never
    raises. Same generation guard as `ProductCache`: a fill with a token read before an
    invalidation is refused, so a revoked token stops working at once on every instance."""

    async def read(self, token_hash: str) -> CachedProduct: ...

    async def fill(self, token_hash: str, body: bytes, token: str | None) -> None:
        """Store `body` unless `token_hash` was invalidated since `read` returned `token`."""
        ...

    async def invalidate(self, token_hash: str) -> None: ...

    async def close(self) -> None: ...


class UserRepository(Protocol):
    async def add(self, email: str, name: str | None, is_admin: bool) -> User: ...

    async def get(self, user_id: int) -> User | None: ...

    async def by_email(self, email: str) -> User | None: ...

    async def by_token_hash(self, token_hash: str) -> User | None: ...

    async def exists(self, user_id: int) -> bool: ...


class TokenRepository(Protocol):
    async def add(self, user_id: int, token_hash: str, name: str | None) -> ApiToken: ...

    async def delete(self, user_id: int, token_id: int) -> str | None:
        """Delete the user's token; returns its hash, or None when they have no such token."""
        ...

    async def delete_named(self, user_id: int, name: str) -> list[str]:
        """Delete the user's tokens named `name`; returns their hashes."""
        ...


class Admissions(Protocol):
    """The writes that admit new work, each in one transaction of its own with its outbox
    rows, the relay woken once they commit: a product with its pending images and their
    jobs, a standalone job. Apart from the unit of work so that PostgreSQL can write each in
    one statement; a create that must check or keep more (another owner, an
    Idempotency-Key whose record commits with the rows) goes through the unit of work.

    Both raise DatabaseUnavailable when the database cannot be reached."""

    async def create_product(
        self,
        draft: NewProduct,
        owner_id: int,
        job_ids: Sequence[str],
        queue: str,
        request_id: str | None,
    ) -> Product:
        """The product, its images (pending) and their jobs (taking `job_ids` in order, on
        `queue`); returns the product as a read would find it. Raises SkuTaken."""
        ...

    async def submit_job(self, job: ImageJob) -> None:
        """A standalone job, queued on its own queue."""
        ...


class ProductRepository(Protocol):
    async def add(self, draft: NewProduct, user_id: int) -> Product:
        """The product as stored (its id, its timestamps), without images."""
        ...

    async def get(self, product_id: int) -> Product | None: ...

    async def search(self, query: ProductQuery) -> list[Product]: ...

    async def lock(self, product_id: int) -> None:
        """Hold the product's job, image and product rows, in that order, until the end of the
        transaction: the order the pipeline's writes take them in, so a change racing a job
        waits instead of deadlocking."""
        ...

    async def update(self, product_id: int, patch: ProductPatch) -> None:
        """Set the patch's fields other than the images (those have their own methods)."""
        ...

    async def delete(self, product_id: int) -> None: ...

    async def add_images(self, product_id: int, images: Sequence[tuple[int, str]]) -> list[int]:
        """Insert pending image rows, each as (position, source_url); returns their ids."""
        ...

    async def record_image_result(self, image_id: int, result: ImageResult) -> int | None:
        """Mark the image ready; returns its product id, or None if the row is gone."""
        ...

    async def record_image_failure(self, image_id: int, error: str, error_code: str) -> int | None:
        """Mark the image failed; returns its product id, or None if the row is gone."""
        ...

    async def set_image_status(self, image_id: int, status: ImageStatus) -> int | None:
        """Move the image to pending or processing (clearing any error); its product id."""
        ...

    async def output_key_in_use(self, key: str) -> bool:
        """Whether any image row still points at this stored object."""
        ...

    async def move_images(self, moves: Sequence[tuple[int, int]]) -> None:
        """Set new positions, each as (image_id, position)."""
        ...

    async def delete_images(self, image_ids: Sequence[int]) -> None: ...


class IdempotencyRepository(Protocol):
    async def get(self, user_id: int, scope: str, key: str) -> IdempotencyRecord | None: ...

    async def add(self, record: IdempotencyRecord) -> None:
        """Raises:
        IdempotentRequestInFlight: a concurrent request holds the same key.
        """
        ...

    async def delete(self, user_id: int, scope: str, key: str) -> None: ...

    async def purge_expired(self, now: datetime, limit: int) -> int:
        """Delete up to `limit` records that expired before `now`; returns how many."""
        ...


class ImageJobRepository(Protocol):
    async def add(self, job: ImageJob) -> None: ...

    async def add_many(self, jobs: Sequence[ImageJob]) -> None:
        """`add` for several jobs, in one statement where the database allows."""
        ...

    async def get(self, job_id: str) -> ImageJob | None: ...

    async def start(self, job_id: str) -> ImageJob | None:
        """Mark an unfinished job processing and count the attempt; None if it is finished
        or gone (a redelivered message then does nothing twice)."""
        ...

    async def mark_succeeded(self, job_id: str, result: ImageResult) -> bool:
        """Record the result of a job not yet finished; False if another delivery did."""
        ...

    async def mark_failed(
        self, job_id: str, error: str, error_code: str | None, dead_lettered_at: datetime | None
    ) -> bool:
        """Fail a job not yet finished (dead-lettered when `dead_lettered_at` is given);
        False if another delivery finished it first."""
        ...

    async def record_failed_attempt(self, job_id: str, error: str, error_code: str) -> None:
        """Note why the last attempt failed; the job stays unfinished, to be retried."""
        ...

    async def queue_upload(self, job_id: str) -> bool:
        """A direct upload's job becomes queued; False when it is not `uploading` any more."""
        ...

    async def expire_uploads(self, now: datetime, error: str, error_code: str) -> list[str]:
        """Fail every `uploading` job whose upload URL expired before `now`; their ids."""
        ...

    async def reset_for_redrive(self, job_id: str) -> None:
        """Queued again as new: no attempts, not finished, not dead-lettered."""
        ...

    async def search(
        self,
        *,
        user_id: int | None,
        status: JobStatus | None = None,
        dead_lettered: bool = False,
        standalone_only: bool = False,
        limit: int = 20,
        after: str | None = None,
    ) -> list[ImageJob]: ...

    async def unfinished(self, older_than: datetime | None = None) -> list[ImageJob]:
        """Jobs queued or processing; with `older_than`, only those whose last step (the
        start, else the creation) came before it."""
        ...

    async def counts(self) -> dict[str, int]:
        """Jobs by state (queued, processing, dead_lettered) and unpublished outbox rows."""
        ...


class WebhookRepository(Protocol):
    async def add(self, message: WebhookMessage) -> None: ...

    async def get(self, message_id: str) -> WebhookMessage | None: ...

    async def record_attempt(
        self,
        message: WebhookMessage,
        result: DeliveryResult,
        status: WebhookStatus,
        at: datetime,
    ) -> bool:
        """Record attempt `message.attempts + 1` and the message's new status; False (and
        nothing written) when that attempt is already recorded or the message is settled."""
        ...

    async def attempts(
        self,
        *,
        user_id: int | None,
        job_id: str | None = None,
        import_id: str | None = None,
        limit: int = 20,
        after: int | None = None,
    ) -> list[WebhookAttempt]:
        """Newest first; `after` is the id of the previous page's last attempt."""
        ...

    async def pending(self, created_before: datetime | None = None) -> list[str]:
        """Ids of the messages still to deliver (created before `created_before` if given)
        whose next attempt is not waiting in the outbox: their broker message was lost."""
        ...


class WebhookSender(Protocol):
    async def send(self, url: str, webhook_id: str, payload: bytes) -> DeliveryResult:
        """One signed attempt; never raises for a network or HTTP problem."""
        ...


class OutboxRepository(Protocol):
    async def add(
        self,
        job_id: str,
        actor: str,
        queue: str,
        request_id: str | None,
        *,
        not_before: datetime | None = None,
    ) -> None:
        """A message to publish once committed (and, with `not_before`, from then on)."""
        ...

    async def add_many(
        self,
        job_ids: Sequence[str],
        actor: str,
        queue: str,
        request_id: str | None,
        *,
        not_before: datetime | None = None,
    ) -> None:
        """`add` for several jobs' messages, in one statement where the database allows."""
        ...

    async def claim(self, limit: int) -> list[OutboxMessage]:
        """Lock up to `limit` unpublished messages (skipping ones another relay holds)."""
        ...

    async def mark_published(self, ids: Sequence[int]) -> None: ...


class TaskQueue(Protocol):
    """The broker, as the relay sees it: publish one job message by actor name."""

    async def publish(self, message: OutboxMessage) -> None:
        """Raises:
        BrokerUnavailable: the broker did not take the message (it stays in the outbox).
        """
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ImageTally:
    """The images an import's rows point at, by state (`failed` counts removed ones too)."""

    done: int = 0
    failed: int = 0
    waiting: int = 0  # pending or processing


@dataclass(frozen=True, slots=True)
class OutputRow:
    """A row of an import's output.csv: its cells as given, and per input URL the URL of
    its processed image (None while not ready, or failed)."""

    row: int
    cells: tuple[str, ...]
    outputs: tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class ProductFields:
    """What an import row sets on an existing product (all of it: unchanged fields too)."""

    product_id: int
    product_name: str
    product_price: Decimal
    product_description: str | None


class ImportRepository(Protocol):
    """CSV imports, their stored rows and batches, and the bulk product writes of a batch."""

    async def add(self, imported: Import) -> None: ...

    async def add_rows(self, import_id: str, rows: Sequence[ImportRow], per_batch: int) -> None:
        """Store the parsed rows, in order; row i goes to batch i // per_batch."""
        ...

    async def add_batches(self, import_id: str, batch_ids: Sequence[str]) -> None:
        """One row per batch, numbered in order, not applied yet."""
        ...

    async def get(self, import_id: str) -> Import | None: ...

    async def search(
        self, *, user_id: int | None, limit: int, after: str | None = None
    ) -> list[Import]:
        """Newest first; `after` is the id of the previous page's last import."""
        ...

    async def claim_batch(self, batch_id: str, now: datetime) -> tuple[str, int] | None:
        """Mark the batch applied, holding it until the end of the transaction; its
        (import id, number), or None when it was applied already (or is gone)."""
        ...

    async def batch_rows(self, import_id: str, number: int) -> list[ImportRow]: ...

    async def batch_applied(self, import_id: str, rows: int, now: datetime) -> Import:
        """Count one more batch (of `rows` rows) done; `processing` from the first."""
        ...

    async def products_by_sku(self, user_id: int, skus: Sequence[str]) -> dict[str, int]:
        """The ids of the user's products with these skus."""
        ...

    async def lock_products(self, product_ids: Sequence[int]) -> None:
        """`ProductRepository.lock` for several products: their jobs, images, then rows."""
        ...

    async def products(self, product_ids: Sequence[int]) -> list[Product]:
        """These products, with their images in position order."""
        ...

    async def add_products(
        self, user_id: int, drafts: Sequence[NewProduct], now: datetime
    ) -> list[int]:
        """Insert the products (images apart); their ids, in order.

        Raises:
            SkuTaken: another product of the user has one of the skus.
        """
        ...

    async def update_products(self, changes: Sequence[ProductFields], now: datetime) -> None: ...

    async def tag_jobs(self, import_id: str, job_ids: Sequence[str]) -> None:
        """Note which import queued these image jobs."""
        ...

    async def link_images(self, import_id: str, links: Sequence[tuple[int, int, int]]) -> None:
        """Record, per (row, position, product image id), the image an input URL became."""
        ...

    async def has_unfinished_jobs(self, import_id: str) -> bool: ...

    async def tally(self, import_id: str) -> ImageTally: ...

    async def finish(
        self,
        import_id: str,
        status: ImportStatus,
        tally: ImageTally,
        now: datetime,
        error: str | None = None,
    ) -> Import | None:
        """Give an unfinished import its final status and counts; None if it had one."""
        ...

    async def settling(self) -> list[str]:
        """Imports processing with every batch applied: waiting for their images only."""
        ...

    async def unapplied_batches(
        self, created_before: datetime | None
    ) -> list[tuple[str, str | None]]:
        """(batch id, request id) of the batches not applied, of unfinished imports."""
        ...

    async def output_rows(self, import_id: str, after_row: int, limit: int) -> list[OutputRow]:
        """Rows after `after_row`, in order, with their outputs."""
        ...


class UnitOfWork(Protocol):
    """One transaction: rolls back on exit unless `commit()` was awaited inside."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def tokens(self) -> TokenRepository: ...

    @property
    def products(self) -> ProductRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def image_jobs(self) -> ImageJobRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def webhooks(self) -> WebhookRepository: ...

    @property
    def imports(self) -> ImportRepository: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    def record(self, event: DomainEvent) -> None:
        """Note what this transaction did; once it commits, the effects run
        (`domain/effects.py`). Nothing runs on a rollback."""
        ...


UnitOfWorkFactory = Callable[[], UnitOfWork]


@dataclass(slots=True)
class ClaimedBatch:
    """Outbox messages claimed by one relay (locked from the others) until the claim ends;
    those listed in `published` are then marked so, the others stay for the next round."""

    messages: list[OutboxMessage]
    published: list[int] = field(default_factory=list)


class OutboxClaims(Protocol):
    def claim(self, limit: int) -> AbstractAsyncContextManager[ClaimedBatch]:
        """The oldest `limit` messages due and not claimed by another relay; what the block
        marks published is committed when it ends (nothing is, if it raises)."""
        ...


class Lookups(Protocol):
    """The point reads of the hot path (every authenticated GET makes them), kept apart from
    the unit of work so PostgreSQL can serve them with the fewest layers in between.

    Every method raises DatabaseUnavailable when the database cannot be reached.
    """

    async def product(self, product_id: int) -> Product | None:
        """The product with its images in position order, or None."""
        ...

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        """The owner of the token with this hash, or None for an unknown or revoked one."""
        ...

    async def image(self, product_id: int, image_id: int) -> OwnedImage | None:
        """One image of the product with the product's owner (a live event per image
        change: one row, not the whole product)."""
        ...

    async def job(self, job_id: str) -> ImageJob | None: ...

    async def settling_imports(self) -> list[str]:
        """The ids of the imports still processing whose every batch is applied: the
        completion sweep's question, asked several times a second by every API process."""
        ...


@dataclass(frozen=True, slots=True)
class StartedJob:
    """A claimed delivery: the job as it now is, and the product whose image row turned
    `processing` (None when the job has no image row: standalone or superseded)."""

    job: ImageJob
    product_id: int | None


class JobTransitions(Protocol):
    """The two writes every image job makes, start and success, each in one short
    transaction; kept apart from the unit of work so PostgreSQL can do each in one statement.
    Failures, supersession and redrives go through the unit of work.

    Every method raises DatabaseUnavailable when the database cannot be reached.
    """

    async def start(self, job_id: str) -> StartedJob | None:
        """Claim a delivery of an unfinished job: status `processing`, attempts + 1, and its
        product image (if the row still exists) `processing`. None: finished or missing."""
        ...

    async def succeed(
        self,
        job_id: str,
        product_image_id: int | None,
        result: ImageResult,
        webhook: WebhookMessage | None = None,
    ) -> tuple[bool, int | None]:
        """Record the result on the job if it is still unfinished and on its image row if
        that still exists: (written, id of the product whose image changed, or None). A
        `webhook` announcing it is queued in the same transaction, if the result is written."""
        ...


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A budget: at most `amount` hits per key in any `seconds`, which may be spent at once.
    `name` keeps budgets apart (the same key counts separately against each)."""

    name: str
    amount: int
    seconds: int = 60

    def __post_init__(self) -> None:
        if self.amount < 1 or self.seconds < 1:
            raise ValueError("a rate limit needs amount >= 1 and seconds >= 1")


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The outcome of one hit; a refusal says in how many seconds the key may hit again."""

    allowed: bool
    retry_after: float = 0.0


class RateLimiter(Protocol):
    """Counts hits per key against a budget that every process shares. Never raises: when
    its storage fails, the hit is let through (and the failure logged)."""

    async def hit(self, limit: RateLimit, key: str) -> RateLimitDecision:
        """Count one hit of `key` against `limit`, unless the budget is spent (a refusal
        is not counted)."""
        ...

    async def close(self) -> None: ...

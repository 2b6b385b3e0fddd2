"""Domain objects: plain frozen dataclasses, mapped from rows in `db/`, never ORM-bound."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


class ImageStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    name: str | None
    is_admin: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    name: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token as shown once, at creation: the only time the secret leaves the server."""

    token: ApiToken
    secret: str


@dataclass(frozen=True, slots=True)
class ProductImage:
    id: int
    position: int
    source_url: str
    status: ImageStatus = ImageStatus.PENDING
    compressed_url: str | None = None
    output_key: str | None = None
    width: int | None = None
    height: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    error: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class OwnedImage:
    """A product image with its product's owner (whose live status it belongs to)."""

    user_id: int
    image: ProductImage


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    user_id: int
    sku: str | None
    product_name: str
    product_description: str | None
    product_price: Decimal
    created_at: datetime
    updated_at: datetime
    images: tuple[ProductImage, ...] = field(default=())

    @property
    def product_images(self) -> list[str]:
        return [image.source_url for image in self.images]

    @property
    def compressed_product_images(self) -> list[str | None]:
        """Position-aligned with `product_images`; None until that image is ready."""
        return [
            image.compressed_url if image.status is ImageStatus.READY else None
            for image in self.images
        ]


class JobStatus(enum.StrEnum):
    UPLOADING = "uploading"  # a direct upload: waiting for the client's PUT and start
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobKind(enum.StrEnum):
    PRODUCT_IMAGE = "product_image"
    STANDALONE = "standalone"


@dataclass(frozen=True, slots=True)
class ImageJob:
    """One unit of image work; the broker carries only its id."""

    id: str
    user_id: int
    kind: JobKind
    status: JobStatus
    queue: str
    operations: list[dict[str, object]]
    created_at: datetime
    product_image_id: int | None = None
    product_id: int | None = None
    source_url: str | None = None
    source_key: str | None = None
    attempts: int = 0
    error: str | None = None
    error_code: str | None = None
    output_key: str | None = None
    output_url: str | None = None
    width: int | None = None
    height: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    callback_url: str | None = None
    request_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    dead_lettered_at: datetime | None = None
    # A direct upload's: until when its URL works, what it must be sent as, and (with file
    # storage) the hash of the token in its URL.
    upload_expires_at: datetime | None = None
    upload_content_type: str | None = None
    upload_token_hash: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What processing produced, written back to the job and its product image."""

    output_key: str
    output_url: str
    width: int
    height: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    job_id: str
    actor: str
    queue: str
    request_id: str | None


class ImportStatus(enum.StrEnum):
    PENDING = "pending"  # accepted, no batch applied yet
    PROCESSING = "processing"  # rows being written, or their images processed
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"  # every row written; some image failed
    FAILED = "failed"  # a batch of rows could not be written

    @property
    def finished(self) -> bool:
        return self not in (ImportStatus.PENDING, ImportStatus.PROCESSING)


@dataclass(frozen=True, slots=True)
class Import:
    """A CSV bulk import: its rows become the owner's products, in batches."""

    id: str
    user_id: int
    status: ImportStatus
    columns: tuple[str, ...]  # the header as given, for output.csv
    rows: int
    images_total: int  # input URLs, over every row
    batches: int
    created_at: datetime
    batches_done: int = 0
    rows_done: int = 0  # rows written so far
    images_done: int = 0
    images_failed: int = 0
    callback_url: str | None = None
    request_id: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class WebhookStatus(enum.StrEnum):
    PENDING = "pending"  # to be tried (again)
    DELIVERED = "delivered"  # a 2xx
    FAILED = "failed"  # the retry schedule ran out
    GONE = "gone"  # the receiver answered 410: no more attempts
    REFUSED = "refused"  # the URL is not allowed (a private address): no more attempts


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """One event to deliver: its body is built once; its id is every attempt's webhook-id."""

    id: str
    user_id: int
    type: str
    url: str
    payload: bytes
    status: WebhookStatus
    created_at: datetime
    attempts: int = 0
    job_id: str | None = None
    import_id: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One delivery attempt, as GET /webhooks/deliveries lists it."""

    id: int
    webhook_id: str
    type: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    created_at: datetime

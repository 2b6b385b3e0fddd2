"""The schema, as SQLAlchemy Core tables: repositories map rows to domain dataclasses
explicitly, so no ORM identity map or lazy load ever sits on a request path."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from stockroom.db.types import BigId, Money, UTCDateTime

# sqlite_autoincrement on every integer-keyed table: SQLite otherwise hands the id of the
# last deleted row to the next insert, and a job for a replaced image would find the new
# image under its old id.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(255)),
    Column("is_admin", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_api_tokens_user_id", "user_id"),
    sqlite_autoincrement=True,
)

products = Table(
    "products",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("sku", String(64)),
    Column("product_name", String(255), nullable=False),
    Column("product_description", Text),
    Column("product_price", Money, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("product_price >= 0", name="price_not_negative"),
    UniqueConstraint("user_id", "sku", name="uq_products_user_id_sku"),
    Index("ix_products_user_created", "user_id", "created_at", "id"),
    Index("ix_products_user_price", "user_id", "product_price", "id"),
    Index("ix_products_user_name", "user_id", "product_name", "id"),
    sqlite_autoincrement=True,
)

product_images = Table(
    "product_images",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("product_id", BigId, ForeignKey("products.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("source_url", String(2048), nullable=False),
    Column("status", String(16), nullable=False),
    Column("compressed_url", String(2048)),
    Column("output_key", String(512)),
    Column("width", Integer),
    Column("height", Integer),
    Column("bytes_in", Integer),
    Column("bytes_out", Integer),
    Column("error", Text),
    Column("error_code", String(32)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_product_images_product_id", "product_id", "position"),
    Index("ix_product_images_output_key", "output_key"),
    sqlite_autoincrement=True,
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(255), nullable=False),
    Column("scope", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    # The first response, sealed with the caller's token (domain/idempotency.py).
    Column("status_code", Integer, nullable=False),
    Column("sealed_body", LargeBinary, nullable=False),
    Column("location", String(2048)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    UniqueConstraint("user_id", "scope", "key", name="uq_idempotency_keys_user_scope_key"),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
    sqlite_autoincrement=True,
)

image_jobs = Table(
    "image_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    # A product image's job points at its row; a PATCH that drops the image deletes the row,
    # and the job, finding no row, writes nothing.
    Column(
        "product_image_id",
        BigId,
        ForeignKey("product_images.id", ondelete="SET NULL"),
    ),
    Column("product_id", BigId),
    Column("source_url", String(2048)),
    Column("source_key", String(512)),
    Column("operations", Text, nullable=False, server_default=text("'[]'")),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("error", Text),
    Column("error_code", String(32)),
    Column("output_key", String(512)),
    Column("output_url", String(2048)),
    Column("width", Integer),
    Column("height", Integer),
    Column("bytes_in", Integer),
    Column("bytes_out", Integer),
    Column("callback_url", String(2048)),
    Column("request_id", String(128)),
    Column("queue", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("dead_lettered_at", UTCDateTime),
    Column("upload_expires_at", UTCDateTime),
    Column("upload_content_type", String(64)),
    Column("upload_token_hash", String(64)),
    Column("import_id", String(32)),  # the CSV import that queued it, if any
    Index("ix_image_jobs_user_created", "user_id", "created_at", "id"),
    Index("ix_image_jobs_product_image_id", "product_image_id"),
    Index("ix_image_jobs_output_key", "output_key"),
    Index("ix_image_jobs_dead_lettered_at", "dead_lettered_at"),
    Index("ix_image_jobs_status", "status"),
    Index("ix_image_jobs_import_status", "import_id", "status"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("queue", String(64), nullable=False),
    Column("request_id", String(128)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("not_before", UTCDateTime),  # published from then on (a webhook retry's backoff)
    Index("ix_outbox_unpublished", "published_at", "id"),
    sqlite_autoincrement=True,
)

# Webhooks (domain/webhook_delivery.py): an event's body is built once, and its id is the
# `webhook-id` of every attempt; each attempt is kept for GET /webhooks/deliveries.
webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("payload", Text, nullable=False),
    Column("job_id", String(32)),
    Column("import_id", String(32)),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Index("ix_webhook_messages_job_id", "job_id"),
    Index("ix_webhook_messages_import_id", "import_id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "message_id",
        String(32),
        ForeignKey("webhook_messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("user_id", BigId, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", String(255)),
    Column("duration_ms", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("message_id", "attempt"),
    Index("ix_webhook_attempts_user_id", "user_id", "id"),
    sqlite_autoincrement=True,
)

# CSV imports (domain/imports.py): the parsed rows are kept with the import from the
# moment it is accepted, so any worker can apply its batches (each once) after a crash.
imports = Table(
    "imports",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(32), nullable=False),
    Column("columns", Text, nullable=False),  # JSON: the header as given
    Column("rows", Integer, nullable=False),
    Column("images_total", Integer, nullable=False, server_default=text("0")),
    Column("batches", Integer, nullable=False),
    Column("batches_done", Integer, nullable=False, server_default=text("0")),
    Column("rows_done", Integer, nullable=False, server_default=text("0")),
    Column("images_done", Integer, nullable=False, server_default=text("0")),
    Column("images_failed", Integer, nullable=False, server_default=text("0")),
    Column("callback_url", String(2048)),
    Column("request_id", String(128)),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Index("ix_imports_user_created", "user_id", "created_at", "id"),
    Index("ix_imports_status", "status"),
)

import_batches = Table(
    "import_batches",
    metadata,
    Column("id", String(32), primary_key=True),  # the outbox row's job_id
    Column("import_id", String(32), ForeignKey("imports.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("applied_at", UTCDateTime),
    UniqueConstraint("import_id", "number", name="uq_import_batches_import_id_number"),
)

import_rows = Table(
    "import_rows",
    metadata,
    Column(
        "import_id",
        String(32),
        ForeignKey("imports.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("row", Integer, primary_key=True),  # as a spreadsheet numbers it (1: the header)
    Column("batch", Integer, nullable=False),
    Column("data", Text, nullable=False),  # JSON: the parsed row and its cells
    Index("ix_import_rows_batch", "import_id", "batch", "row"),
)

import_images = Table(
    "import_images",
    metadata,
    Column(
        "import_id",
        String(32),
        ForeignKey("imports.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("row", Integer, primary_key=True),
    Column("position", Integer, primary_key=True),
    # The image row this input URL became (kept or new); NULL once that image is removed.
    Column(
        "product_image_id",
        BigId,
        ForeignKey("product_images.id", ondelete="SET NULL"),
    ),
    Index("ix_import_images_product_image_id", "product_image_id"),
)

"""Image jobs and the transactional outbox that carries them to the broker.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stockroom.db.types import BigId, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("product_image_id", BigId),
        sa.Column("product_id", BigId),
        sa.Column("source_url", sa.String(2048)),
        sa.Column("source_key", sa.String(512)),
        sa.Column("operations", sa.Text, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("error", sa.Text),
        sa.Column("error_code", sa.String(32)),
        sa.Column("output_key", sa.String(512)),
        sa.Column("output_url", sa.String(2048)),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("bytes_in", sa.Integer),
        sa.Column("bytes_out", sa.Integer),
        sa.Column("callback_url", sa.String(2048)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("dead_lettered_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_image_jobs"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_image_jobs_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["product_image_id"],
            ["product_images.id"],
            name="fk_image_jobs_product_image_id_product_images",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_image_jobs_user_created", "image_jobs", ["user_id", "created_at", "id"])
    op.create_index("ix_image_jobs_product_image_id", "image_jobs", ["product_image_id"])
    op.create_index("ix_image_jobs_output_key", "image_jobs", ["output_key"])
    op.create_index("ix_image_jobs_dead_lettered_at", "image_jobs", ["dead_lettered_at"])
    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("published_at", UTCDateTime),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        # AUTOINCREMENT: SQLite must never reuse the id of a deleted row.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])
    op.create_index("ix_product_images_output_key", "product_images", ["output_key"])


def downgrade() -> None:
    op.drop_index("ix_product_images_output_key", "product_images")
    op.drop_table("outbox")
    op.drop_table("image_jobs")

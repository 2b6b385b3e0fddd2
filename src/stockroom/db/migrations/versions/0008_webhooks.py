"""Webhooks: each event to deliver (its body built once, its id the `webhook-id` of every
attempt) and each attempt; outbox rows may wait until a time (a retry's backoff).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stockroom.db.types import BigId, UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("job_id", sa.String(32)),
        sa.Column("import_id", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_messages"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_webhook_messages_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_webhook_messages_job_id", "webhook_messages", ["job_id"])
    op.create_index("ix_webhook_messages_import_id", "webhook_messages", ["import_id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("message_id", sa.String(32), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.String(255)),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["webhook_messages.id"],
            name="fk_webhook_attempts_message_id_webhook_messages",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("message_id", "attempt", name="uq_webhook_attempts_message_id_attempt"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_webhook_attempts_user_id", "webhook_attempts", ["user_id", "id"])
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("not_before", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("not_before")
    op.drop_index("ix_webhook_attempts_user_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_messages_import_id", table_name="webhook_messages")
    op.drop_index("ix_webhook_messages_job_id", table_name="webhook_messages")
    op.drop_table("webhook_messages")

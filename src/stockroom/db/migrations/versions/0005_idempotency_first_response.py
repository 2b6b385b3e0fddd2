"""Idempotency records keep the first response (sealed) and expire.

A replay used to re-read the resource by id, which could show what the caller may no
longer see. Old records hold no response to replay, so they are dropped: a retry of a
request made before this migration creates anew.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stockroom.db.types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("resource_id")
        batch.add_column(sa.Column("status_code", sa.Integer(), nullable=False))
        batch.add_column(sa.Column("sealed_body", sa.LargeBinary(), nullable=False))
        batch.add_column(sa.Column("location", sa.String(2048)))
        batch.add_column(sa.Column("expires_at", UTCDateTime, nullable=False))
        batch.create_index("ix_idempotency_keys_expires_at", ["expires_at"])


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_index("ix_idempotency_keys_expires_at")
        batch.drop_column("expires_at")
        batch.drop_column("location")
        batch.drop_column("sealed_body")
        batch.drop_column("status_code")
        batch.add_column(sa.Column("resource_id", sa.String(64), nullable=False))

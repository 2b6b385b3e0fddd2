"""Direct uploads: a job can wait in `uploading` for its file, until its URL expires.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stockroom.db.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("image_jobs") as batch:
        batch.add_column(sa.Column("upload_expires_at", UTCDateTime))
        batch.add_column(sa.Column("upload_content_type", sa.String(64)))
        batch.add_column(sa.Column("upload_token_hash", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("image_jobs") as batch:
        batch.drop_column("upload_token_hash")
        batch.drop_column("upload_content_type")
        batch.drop_column("upload_expires_at")

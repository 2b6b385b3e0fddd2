"""Index image jobs by status: queue depth is read at every metrics scrape.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_image_jobs_status", "image_jobs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_image_jobs_status", "image_jobs")

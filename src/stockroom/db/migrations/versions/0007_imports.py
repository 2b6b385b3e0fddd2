"""Bulk CSV imports: the import, its parsed rows (kept until it is done, so any worker can
finish an import the API accepted), its batches (each applied once) and, per input URL, the
product image it produced (the source of its progress and of output.csv); image jobs
remember the import that queued them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stockroom.db.types import BigId, UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("columns", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("images_total", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("batches", sa.Integer, nullable=False),
        sa.Column("batches_done", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("rows_done", sa.Integer, nullable=False, server_default=sa.text("0")),
        # Counted when the import finishes (live from the image rows until then).
        sa.Column("images_done", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("images_failed", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("callback_url", sa.String(2048)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_imports"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_imports_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_imports_user_created", "imports", ["user_id", "created_at", "id"])
    op.create_index("ix_imports_status", "imports", ["status"])
    op.create_table(
        "import_batches",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("import_id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("applied_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_import_batches"),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
            name="fk_import_batches_import_id_imports",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("import_id", "number", name="uq_import_batches_import_id_number"),
    )
    op.create_table(
        "import_rows",
        sa.Column("import_id", sa.String(32), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("batch", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("import_id", "row", name="pk_import_rows"),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
            name="fk_import_rows_import_id_imports",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_import_rows_batch", "import_rows", ["import_id", "batch", "row"])
    op.create_table(
        "import_images",
        sa.Column("import_id", sa.String(32), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("product_image_id", BigId),
        sa.PrimaryKeyConstraint("import_id", "row", "position", name="pk_import_images"),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
            name="fk_import_images_import_id_imports",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_image_id"],
            ["product_images.id"],
            name="fk_import_images_product_image_id_product_images",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_import_images_product_image_id", "import_images", ["product_image_id"])
    # The import that queued a job: "has this import an unfinished job?" is one index probe.
    with op.batch_alter_table("image_jobs") as batch:
        batch.add_column(sa.Column("import_id", sa.String(32)))
        batch.create_index("ix_image_jobs_import_status", ["import_id", "status"])


def downgrade() -> None:
    with op.batch_alter_table("image_jobs") as batch:
        batch.drop_index("ix_image_jobs_import_status")
        batch.drop_column("import_id")
    op.drop_index("ix_import_images_product_image_id", "import_images")
    op.drop_table("import_images")
    op.drop_index("ix_import_rows_batch", "import_rows")
    op.drop_table("import_rows")
    op.drop_table("import_batches")
    op.drop_index("ix_imports_status", "imports")
    op.drop_index("ix_imports_user_created", "imports")
    op.drop_table("imports")

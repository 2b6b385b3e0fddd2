"""Faster name filter on PostgreSQL: a trigram index scoped by owner, and finer statistics
on product_name so the planner sees how common a word is (measured in docs/performance.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute(
        "CREATE INDEX ix_products_user_name_trgm ON products "
        "USING gin (user_id, product_name gin_trgm_ops)"
    )
    op.execute("DROP INDEX IF EXISTS ix_products_name_trgm")
    op.execute("ALTER TABLE products ALTER COLUMN product_name SET STATISTICS 1000")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE products ALTER COLUMN product_name SET STATISTICS -1")
    op.execute(
        "CREATE INDEX ix_products_name_trgm ON products USING gin (product_name gin_trgm_ops)"
    )
    op.execute("DROP INDEX IF EXISTS ix_products_user_name_trgm")

"""Users, API tokens, products, product images and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stockroom.db.types import BigId, Money, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        # AUTOINCREMENT: SQLite must never reuse the id of a deleted row.
        sqlite_autoincrement=True,
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
        # AUTOINCREMENT: SQLite must never reuse the id of a deleted row.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "products",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("sku", sa.String(64)),
        sa.Column("product_name", sa.String(255), nullable=False),
        sa.Column("product_description", sa.Text),
        sa.Column("product_price", Money, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_products_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint("product_price >= 0", name="ck_products_price_not_negative"),
        sa.UniqueConstraint("user_id", "sku", name="uq_products_user_id_sku"),
        # AUTOINCREMENT: SQLite must never reuse the id of a deleted row.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_products_user_created", "products", ["user_id", "created_at", "id"])
    op.create_index("ix_products_user_price", "products", ["user_id", "product_price", "id"])
    op.create_index("ix_products_user_name", "products", ["user_id", "product_name", "id"])
    if op.get_bind().dialect.name == "postgresql":
        # Trigram index for the case-insensitive substring filter (`name=`): ILIKE '%lamp%'
        # cannot use a b-tree. pg_trgm is a trusted extension: the database owner may add it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_products_name_trgm ON products USING gin (product_name gin_trgm_ops)"
        )
    op.create_table(
        "product_images",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("product_id", BigId, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("source_url", sa.String(2048), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("compressed_url", sa.String(2048)),
        sa.Column("output_key", sa.String(512)),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("bytes_in", sa.Integer),
        sa.Column("bytes_out", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("error_code", sa.String(32)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_product_images"),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name="fk_product_images_product_id_products",
            ondelete="CASCADE",
        ),
        # AUTOINCREMENT: SQLite must never reuse the id of a deleted row.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_product_images_product_id", "product_images", ["product_id", "position"])
    op.create_table(
        "idempotency_keys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_idempotency_keys_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("user_id", "scope", "key", name="uq_idempotency_keys_user_scope_key"),
        # AUTOINCREMENT: SQLite must never reuse the id of a deleted row.
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("product_images")
    op.drop_table("products")
    op.drop_table("api_tokens")
    op.drop_table("users")

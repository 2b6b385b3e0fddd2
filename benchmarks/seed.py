"""A fresh, migrated benchmark database, seeded with SQL (not through the API).

Layout of the seeded catalog, which the load scripts rely on:

* users 1..`users`; user 1 is the benchmark user and the only one with a token;
* products 1..`total`: every tenth id (10, 20, ...) belongs to user 1, the others are
  spread over users 2..`users`, so the benchmark user's rows are interleaved with other
  tenants' rows in the heap, as when many tenants write at the same time;
* `created_at` grows with the id (one second apart, ending now);
* names are "<adjective> <material> <noun>[ <suffix>]" from a small vocabulary, so a
  `name=` substring such as "lamp" matches a few percent of rows, and the rare suffix
  "Aurora Edition" about 0.2 %;
* prices are skewed towards cheap items: 1 + 999 * u^2 for u uniform in [0, 1).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass

import asyncpg

from stockroom.db.migrate import upgrade

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "stockroom_bench"
BENCH_DSN = f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}"
BENCH_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB}"
BENCH_USER_ID = 1
BENCH_USER_STRIDE = 10  # product ids divisible by this belong to the benchmark user

ADJECTIVES = [
    "Compact", "Classic", "Modern", "Rustic", "Vintage", "Ergonomic", "Premium", "Portable",
    "Deluxe", "Sleek", "Sturdy", "Foldable", "Minimal", "Heavy-Duty", "Slim", "Smart",
    "Wireless", "Handmade", "Industrial", "Nordic", "Cozy", "Elegant", "Lightweight",
    "Waterproof",
]  # fmt: skip
MATERIALS = [
    "Oak", "Walnut", "Bamboo", "Steel", "Brass", "Copper", "Leather", "Linen", "Wool",
    "Cotton", "Ceramic", "Glass", "Marble", "Concrete", "Aluminium", "Velvet",
]  # fmt: skip
NOUNS = [
    "Desk Lamp", "Armchair", "Bookshelf", "Coffee Table", "Floor Lamp", "Side Table",
    "Bar Stool", "Sofa", "Wardrobe", "Dresser", "Mirror", "Rug", "Cushion", "Blanket",
    "Vase", "Planter", "Wall Clock", "Kettle", "Teapot", "Mug", "Bowl", "Cutting Board",
    "Knife Block", "Backpack", "Wallet", "Notebook", "Pen Holder", "Headphones", "Speaker",
    "Keyboard", "Monitor Stand", "Office Chair", "Bench", "Coat Rack", "Shoe Rack",
    "Candle Holder", "Picture Frame", "Lantern", "Hammock", "Doormat",
]  # fmt: skip
SUFFIXES = ["Mk II", "XL", "Mini", "Pro", "Set of 2", "Large", "Small"]
RARE_SUFFIX = "Aurora Edition"
RARE_FRACTION = 0.002
SUFFIX_FRACTION = 0.3


# What-if changes to the database, applied after seeding (see docs/performance.md);
# none of them is part of the schema the migrations create.
EXPERIMENTS: dict[str, list[str]] = {
    # Plan every execution of a prepared statement with its parameters (no generic plan).
    "custom-plans": [f'ALTER DATABASE "{BENCH_DB}" SET plan_cache_mode = force_custom_plan'],
    # A 1000-entry histogram and MCV list, so `name ILIKE '%word%'` is estimated well.
    "name-stats": ["ALTER TABLE products ALTER COLUMN product_name SET STATISTICS 1000"],
    # The trigram index scoped by user: (user_id, product_name gin_trgm_ops), via btree_gin.
    "user-trgm": [
        "CREATE EXTENSION IF NOT EXISTS btree_gin",
        "CREATE INDEX ix_products_user_name_trgm ON products"
        " USING gin (user_id, product_name gin_trgm_ops)",
        "DROP INDEX ix_products_name_trgm",
    ],
}


@dataclass(frozen=True, slots=True)
class SeedPlan:
    total_products: int
    user_products: int
    users: int = 1_000

    @classmethod
    def for_mode(cls, quick: bool) -> SeedPlan:
        if quick:
            return cls(total_products=100_000, user_products=10_000)
        return cls(total_products=1_000_000, user_products=100_000)

    def __post_init__(self) -> None:
        if self.total_products != self.user_products * BENCH_USER_STRIDE:
            raise ValueError("the benchmark user owns exactly one product id in ten")


@dataclass(frozen=True, slots=True)
class Seeded:
    plan: SeedPlan
    token: str
    seconds: float
    table_mb: float
    index_mb: dict[str, float]

    @property
    def user_product_ids(self) -> tuple[int, int, int]:
        """(first, last, step) of the benchmark user's product ids."""
        stride = BENCH_USER_STRIDE
        return stride, self.plan.total_products, stride


_PRODUCTS_SQL = """
INSERT INTO products (id, user_id, sku, product_name, product_description, product_price,
                      created_at, updated_at)
SELECT g,
       CASE WHEN g % $2 = 0 THEN $3::bigint ELSE 2 + (g * 7919) % ($4::bigint - 1) END,
       NULL,
       p.adj || ' ' || p.mat || ' ' || p.noun || p.suffix,
       'A ' || lower(p.adj) || ' ' || lower(p.noun) || ' in ' || lower(p.mat) || '. '
           || repeat('Ships within two working days. ', (1 + g % 3)::int),
       round((1 + 999 * power(random(), 2))::numeric, 2),
       now() - make_interval(secs => ($1 - g)::double precision),
       now() - make_interval(secs => ($1 - g)::double precision)
FROM generate_series(1, $1::bigint) AS g,
LATERAL (
    SELECT ($5::text[])[1 + floor(random() * cardinality($5::text[]))::int] AS adj,
           ($6::text[])[1 + floor(random() * cardinality($6::text[]))::int] AS mat,
           ($7::text[])[1 + floor(random() * cardinality($7::text[]))::int] AS noun,
           CASE WHEN r < $9::float8 THEN ' ' || $10::text
                WHEN r < $9::float8 + $11::float8
                    THEN ' ' || ($8::text[])[1 + (g % cardinality($8::text[]))]
                ELSE '' END AS suffix
    FROM (SELECT random() AS r, g AS dummy) AS rr
) AS p
"""


async def recreate_database(name: str = BENCH_DB) -> None:
    """Drop (disconnecting its clients) and create an empty database."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database() -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    finally:
        await conn.close()


async def prepare(plan: SeedPlan, experiments: tuple[str, ...] = ()) -> Seeded:
    """Drop, recreate, migrate and seed the benchmark database, then apply `experiments`."""
    started = time.perf_counter()
    await recreate_database()
    # upgrade() runs its own event loop, so it needs a thread without one.
    await asyncio.to_thread(upgrade, BENCH_URL)
    token = "sr_" + secrets.token_urlsafe(32)
    conn = await asyncpg.connect(BENCH_DSN)
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SELECT setseed(0.42)")
        await _seed_users(conn, plan, token)
        await _seed_products(conn, plan)
        for experiment in experiments:
            for statement in EXPERIMENTS[experiment]:
                await conn.execute(statement)
        await conn.execute("VACUUM (ANALYZE) products")
        await conn.execute("VACUUM (ANALYZE) users")
        await conn.execute("VACUUM (ANALYZE) api_tokens")
        table_mb = await conn.fetchval("SELECT pg_table_size('products') / 1048576.0")
        sizes = await conn.fetch(
            "SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) / 1048576.0"
            " AS mb FROM pg_index WHERE indrelid = 'products'::regclass ORDER BY 1"
        )
    finally:
        await conn.close()
    return Seeded(
        plan=plan,
        token=token,
        seconds=time.perf_counter() - started,
        table_mb=float(table_mb),
        index_mb={row["name"]: round(float(row["mb"]), 1) for row in sizes},
    )


async def _seed_users(conn: asyncpg.Connection, plan: SeedPlan, token: str) -> None:
    await conn.execute(
        "INSERT INTO users (id, email, name, is_admin, created_at)"
        " SELECT g, 'user' || g || '@bench.local', 'Bench user ' || g, g = 1, now()"
        " FROM generate_series(1, $1::bigint) AS g",
        plan.users,
    )
    await conn.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), $1)", plan.users)
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    await conn.execute(
        "INSERT INTO api_tokens (user_id, token_hash, name, created_at)"
        " VALUES ($1, $2, 'bench', now())",
        BENCH_USER_ID,
        token_hash,
    )


async def _seed_products(conn: asyncpg.Connection, plan: SeedPlan) -> None:
    """Bulk insert without the secondary indexes, then rebuild them from their own
    definitions (pg_indexes.indexdef), so they are exactly what the migration made."""
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'products'"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint"
        " WHERE conrelid = 'products'::regclass)"
    )
    for index in indexes:
        await conn.execute(f'DROP INDEX "{index["indexname"]}"')
    await conn.execute(
        _PRODUCTS_SQL,
        plan.total_products,
        BENCH_USER_STRIDE,
        BENCH_USER_ID,
        plan.users,
        ADJECTIVES,
        MATERIALS,
        NOUNS,
        SUFFIXES,
        RARE_FRACTION,
        RARE_SUFFIX,
        SUFFIX_FRACTION,
    )
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('products', 'id'), $1)", plan.total_products
    )
    for index in indexes:
        await conn.execute(index["indexdef"])

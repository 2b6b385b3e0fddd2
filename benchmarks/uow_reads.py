"""A/B in one process: `get_product` through a read-only unit of work (no BEGIN/ROLLBACK on
PostgreSQL) against the read-write one, alternating, on the benchmark database.

Run after `python -m benchmarks --only api` (it needs `stockroom_bench`):
`.venv/bin/python -m benchmarks.uow_reads`.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from stockroom.bootstrap import Role, bootstrap
from stockroom.config import Settings
from stockroom.domain import products, users
from stockroom.domain.queries import NewProduct


async def main() -> None:
    s = await bootstrap(
        Settings(
            _env_file=None,
            database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/stockroom_bench",
            cache_url="none://",
            log_level="WARNING",
        ),
        Role.CLI,
    )
    u, _ = await users.create_user(s.uow(), email=f"ab{time.time()}@example.com")
    c = await products.create_product(
        s.uow(), s.admissions, u, NewProduct(product_name="x", product_price=Decimal(1))
    )
    assert c.product is not None
    pid = c.product.id
    for label, factory in [("rw", s.uow), ("ro", s.read_uow)] * 2:
        t0 = time.perf_counter()
        for _ in range(2000):
            await products.get_product(factory(), u, pid)
        print(label, round((time.perf_counter() - t0) / 2000 * 1e6), "us per read")
    await s.aclose()


if __name__ == "__main__":
    asyncio.run(main())

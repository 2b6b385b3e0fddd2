"""Products made through the service, as the API makes them."""

from __future__ import annotations

from stockroom.db.admissions import UnitOfWorkAdmissions
from stockroom.domain import products
from stockroom.domain.models import Product, User
from stockroom.domain.ports import UnitOfWork
from stockroom.domain.queries import NewProduct


async def new_product(uow: UnitOfWork, actor: User, draft: NewProduct) -> Product:
    """Create without an Idempotency-Key, so the product is always made now (through `uow`:
    tests/integration/test_admissions_contract.py covers PostgreSQL's one statement)."""
    created = await products.create_product(uow, UnitOfWorkAdmissions(lambda: uow), actor, draft)
    assert created.product is not None
    return created.product

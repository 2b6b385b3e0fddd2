"""Product services: the API's product routes go through these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import orjson
import structlog

from stockroom.domain.errors import (
    FieldError,
    InvalidInput,
    NotAllowed,
    ProductNotFound,
    UnknownUser,
)
from stockroom.domain.events import OutputsReleased, ProductChanged
from stockroom.domain.idempotency import FirstResponse, IdempotencyKey, create_once, fingerprint_of
from stockroom.domain.image_jobs import IMAGES_QUEUE, new_job_id, queue_product_images
from stockroom.domain.models import Product, ProductImage, User
from stockroom.domain.ports import Admissions, UnitOfWork
from stockroom.domain.queries import UNSET, Cursor, NewProduct, ProductPatch, ProductQuery
from stockroom.domain.queries import ProductSort as ProductSort
from stockroom.domain.rules import price_problem, text_problem

log = structlog.get_logger("stockroom.products")
CREATE_SCOPE = "products.create"
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Created:
    """A create's answer: the response to send, and the product when it was made now
    (None on a replay of an Idempotency-Key, which answers the first response again)."""

    response: FirstResponse
    product: Product | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ProductPage:
    items: list[Product]
    next_cursor: Cursor | None


def fingerprint(draft: NewProduct) -> str:
    """A stable hash of what was asked, to tell a retry from a different request."""
    return fingerprint_of(
        {
            "n": draft.product_name,
            "p": str(draft.product_price),
            "d": draft.product_description,
            "i": list(draft.product_images),
            "s": draft.sku,
            "u": draft.user_id,
        }
    )


def product_reference(product: Product) -> bytes:
    """The least a create can answer; the API passes the full representation."""
    return orjson.dumps({"id": product.id})


def owner_for(actor: User, user_id: int | None) -> int:
    """Whom a product belongs to: the caller, or anyone when an admin says so."""
    if user_id is None or user_id == actor.id:
        return actor.id
    if not actor.is_admin:
        raise NotAllowed("only an admin may act for another user")
    return user_id


async def create_product(
    uow: UnitOfWork,
    admissions: Admissions,
    actor: User,
    draft: NewProduct,
    idempotency: IdempotencyKey | None = None,
    request_id: str | None = None,
    render: Callable[[Product], bytes] = product_reference,
) -> Created:
    """Create a product and its pending image rows in one transaction; with a key, the
    response (`render` of the product) is kept with it, in the same transaction."""
    owner_id = owner_for(actor, draft.user_id)
    job_ids = [new_job_id() for _ in draft.product_images]
    if idempotency is None and owner_id == actor.id:
        # Nothing to check or keep beside the rows: the short way, one statement on
        # PostgreSQL (db/admissions.py).
        product = await admissions.create_product(
            draft, owner_id, job_ids, IMAGES_QUEUE, request_id
        )
        return Created(_created(product, render), product, replayed=False)
    made: list[Product] = []

    async def create(uow: UnitOfWork) -> FirstResponse:
        if owner_id != actor.id and not await uow.users.exists(owner_id):
            raise UnknownUser(errors=[FieldError("user_id", "no user with this id")])
        product = await write_new_product(uow, draft, owner_id, job_ids, IMAGES_QUEUE, request_id)
        made.append(product)
        return _created(product, render)

    outcome = await create_once(uow, actor.id, CREATE_SCOPE, idempotency, create)
    return Created(outcome.response, None if outcome.replayed else made[-1], outcome.replayed)


async def write_new_product(
    uow: UnitOfWork,
    draft: NewProduct,
    owner_id: int,
    job_ids: Sequence[str],
    queue: str,
    request_id: str | None,
) -> Product:
    """A product's rows, its pending images' and their jobs' (taking `job_ids` in order),
    inside the caller's transaction; returns the product as a read would find it."""
    added = await uow.products.add(draft, owner_id)
    urls = draft.product_images
    image_ids = await uow.products.add_images(added.id, list(enumerate(urls)))
    await queue_product_images(
        uow,
        user_id=owner_id,
        product_id=added.id,
        images=list(zip(image_ids, urls, strict=True)),
        request_id=request_id,
        queue=queue,
        job_ids=job_ids,
    )
    return replace(added, images=pending_images(image_ids, urls))


def pending_images(image_ids: Sequence[int], urls: Sequence[str]) -> tuple[ProductImage, ...]:
    """A new product's images as a read would return them, without the read: all pending,
    in the order of their URLs."""
    return tuple(
        ProductImage(image_id, position, url)
        for position, (image_id, url) in enumerate(zip(image_ids, urls, strict=True))
    )


def _created(product: Product, render: Callable[[Product], bytes]) -> FirstResponse:
    return FirstResponse(201, render(product), f"/products/{product.id}")


async def get_product(uow: UnitOfWork, actor: User, product_id: int) -> Product:
    async with uow:
        return await _get_visible(uow, actor, product_id)


async def list_products(
    uow: UnitOfWork, actor: User, query: ProductQuery, user_id: int | None = None
) -> ProductPage:
    query = replace(
        query,
        owner_id=owner_for(actor, user_id),
        # Prices are stored in cents: round the bounds inwards, never outwards.
        min_price=_to_cent(query.min_price, ROUND_CEILING),
        max_price=_to_cent(query.max_price, ROUND_FLOOR),
    )
    async with uow:
        rows = await uow.products.search(replace(query, limit=query.limit + 1))
    items, more = rows[: query.limit], len(rows) > query.limit
    return ProductPage(items, sort_cursor(items[-1], query.sort) if more else None)


def sort_cursor(product: Product, sort: ProductSort) -> Cursor:
    value: object
    if sort in (ProductSort.NEWEST, ProductSort.OLDEST):
        value = product.created_at.isoformat()
    elif sort in (ProductSort.CHEAPEST, ProductSort.DEAREST):
        value = product.product_price
    else:
        value = product.product_name
    return Cursor(value=str(value), id=product.id)


async def update_product(
    uow: UnitOfWork,
    actor: User,
    product_id: int,
    patch: ProductPatch,
    request_id: str | None = None,
) -> Product:
    """Apply a partial update; a changed image list keeps the results of URLs that stay."""
    async with uow:
        await uow.products.lock(product_id)
        current = await _get_visible(uow, actor, product_id)
        owner_id = current.user_id
        if patch.user_id is not UNSET:
            owner_id = owner_for(actor, patch.user_id)
            if owner_id != current.user_id and not await uow.users.exists(owner_id):
                raise UnknownUser(errors=[FieldError("user_id", "no user with this id")])
            patch = replace(patch, user_id=owner_id)
        await uow.products.update(product_id, patch)
        if patch.product_images is not UNSET:
            new, dropped = await _replace_images(
                uow, product_id, current.images, list(patch.product_images)
            )
            release_outputs(uow, dropped)
            await queue_product_images(
                uow,
                user_id=owner_id,
                product_id=product_id,
                images=new,
                request_id=request_id,
            )
        product = await _get(uow, product_id)
        uow.record(ProductChanged(product_id))
        await uow.commit()
    return product


async def delete_product(uow: UnitOfWork, actor: User, product_id: int) -> Product:
    """Delete the product and its image rows, then the processed files nobody else uses."""
    async with uow:
        await uow.products.lock(product_id)
        product = await _get_visible(uow, actor, product_id)
        await uow.products.delete(product_id)
        release_outputs(uow, product.images)
        uow.record(ProductChanged(product_id))
        await uow.commit()
    return product


def release_outputs(uow: UnitOfWork, images: Sequence[ProductImage]) -> None:
    """These images' files may be unused once this commits (the effects check, then remove:
    outputs are content-addressed, so another image may share one)."""
    keys = tuple(dict.fromkeys(image.output_key for image in images if image.output_key))
    if keys:
        uow.record(OutputsReleased(keys))


async def _replace_images(
    uow: UnitOfWork, product_id: int, current: Sequence[ProductImage], urls: list[str]
) -> tuple[list[tuple[int, str]], list[ProductImage]]:
    """Match new URLs to existing rows (first unused row with the same URL keeps its
    result), move the kept ones, drop the rest, insert the new ones as pending.
    Returns the new rows as (image_id, url), which need processing, and the dropped ones."""
    unused: dict[str, list[ProductImage]] = {}
    for image in current:
        unused.setdefault(image.source_url, []).append(image)
    moves: list[tuple[int, int]] = []
    new: list[tuple[int, str]] = []
    for position, url in enumerate(urls):
        candidates = unused.get(url)
        if candidates:
            image = candidates.pop(0)
            if image.position != position:
                moves.append((image.id, position))
        else:
            new.append((position, url))
    dropped = [image for rest in unused.values() for image in rest]
    await uow.products.delete_images([image.id for image in dropped])
    await uow.products.move_images(moves)
    new_ids = await uow.products.add_images(product_id, new)
    return list(zip(new_ids, [url for _, url in new], strict=True)), dropped


async def _get(uow: UnitOfWork, product_id: int) -> Product:
    product = await uow.products.get(product_id)
    if product is None:
        raise ProductNotFound()
    return product


async def _get_visible(uow: UnitOfWork, actor: User, product_id: int) -> Product:
    return visible_to(actor, await uow.products.get(product_id))


def visible_to(actor: User, product: Product | None) -> Product:
    """404, never 403, for someone else's product: its existence is not revealed."""
    if product is None or not may_see(actor, product.user_id):
        raise ProductNotFound()
    return product


def may_see(actor: User, owner_id: int) -> bool:
    """Owners see their own products; admins see everyone's."""
    return owner_id == actor.id or actor.is_admin


def parse_sort_value(sort: ProductSort, value: str) -> object:
    """The typed value behind a cursor, for the repository's keyset comparison."""
    try:
        if sort in (ProductSort.CHEAPEST, ProductSort.DEAREST):
            price = Decimal(value)
            if price_problem(price) is None:
                return price
        elif sort in (ProductSort.NEWEST, ProductSort.OLDEST):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is not None:
                # In UTC here: 0001-01-01T00:00+14:00 has no UTC form (OverflowError).
                return moment.astimezone(UTC)
        elif text_problem(value) is None:
            return value
    except (ArithmeticError, ValueError):  # OverflowError is an ArithmeticError
        pass
    raise InvalidInput("invalid cursor", [FieldError("cursor", "is not a cursor from this list")])


def _to_cent(value: Decimal | None, rounding: str) -> Decimal | None:
    return None if value is None else value.quantize(CENT, rounding)

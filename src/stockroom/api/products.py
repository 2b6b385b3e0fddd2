"""/products: create, read, list, update and delete a caller's products."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError, WithJsonSchema

from stockroom.api.deps import (
    CurrentUser,
    ReadUowDep,
    RequestId,
    ServicesDep,
    UowDep,
    authenticated_user,
    get_services,
)
from stockroom.api.fields import Text
from stockroom.api.idempotency import IdempotencyDep, answer
from stockroom.api.schemas import (
    ProductCreate,
    ProductPage,
    ProductPublic,
    ProductUpdate,
    product_json,
    product_page_json,
)
from stockroom.domain import products
from stockroom.domain.pagination import decode_cursor, encode_cursor
from stockroom.domain.product_reads import read_product
from stockroom.domain.queries import NewProduct, ProductPatch, ProductQuery, ProductSort

router = APIRouter(prefix="/products", tags=["products"])
JSON = "application/json"
MAX_PRODUCT_ID = 2**63 - 1
MAX_IF_NONE_MATCH = 1024
T = TypeVar("T")
ProductId = Annotated[int, Path(ge=1, le=MAX_PRODUCT_ID)]
PriceFilter = Annotated[
    Decimal | None,
    Query(ge=0, le=Decimal("99999999.99")),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,8}(\.[0-9]+)?$"}),
]


async def get_product(request: Request) -> Response:
    """GET /products/{product_id}, the hot read, as a plain Starlette endpoint.

    FastAPI's dependency solving and its route wrappers are a large share of its CPU
    (docs/performance.md), so this route is served without them. It
    authenticates and validates with the same functions and error shapes as the declared
    operation below, which documents it in the OpenAPI schema.
    """
    # Starlette's router records the matched route here, FastAPI's only for its own routes:
    # the access log and the metrics label requests by it.
    request.scope["route"] = _SERVING_ROUTE
    user = await authenticated_user(request)
    product_id = _validated(_PRODUCT_ID, request.path_params["product_id"], "path", "product_id")
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        _validated(_IF_NONE_MATCH, if_none_match, "header", "if-none-match")
    services = await get_services(request)
    found = await read_product(services.lookups, services.cache, user, product_id, product_json)
    headers = {
        "ETag": found.etag,
        "X-Cache": "HIT" if found.cached else "MISS",
        "Cache-Control": "private, no-cache",
    }
    if if_none_match and _matches(if_none_match, found.etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, headers=headers, media_type=JSON)


# First in the router, so Starlette matches it before any FastAPI route. (A plain route
# does not get the router's prefix.)
router.add_route(
    router.prefix + "/{product_id}", get_product, methods=["GET"], include_in_schema=False
)
_SERVING_ROUTE = router.routes[-1]
_PRODUCT_ID: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_PRODUCT_ID)])
_IF_NONE_MATCH: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(max_length=MAX_IF_NONE_MATCH)])


def _validated(adapter: TypeAdapter[T], value: str, *loc: str) -> T:
    """`value` validated as FastAPI validates a declared parameter, with its error shape."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        errors = [{**error, "loc": (*loc, *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductPublic,
    responses={409: {"description": "sku taken, or Idempotency-Key reused"}},
)
async def create_product(
    body: ProductCreate,
    user: CurrentUser,
    uow: UowDep,
    services: ServicesDep,
    request_id: RequestId,
    idempotency: IdempotencyDep,
) -> Response:
    draft = NewProduct(
        product_name=body.product_name,
        product_price=body.product_price,
        product_description=body.product_description,
        product_images=tuple(body.product_images),
        sku=body.sku,
        user_id=body.user_id,
    )
    key = idempotency.for_body(products.fingerprint(draft))
    created = await products.create_product(
        uow, services.admissions, user, draft, key, request_id, product_json
    )
    return answer(created.response, replayed=created.replayed)


@router.get(
    "/{product_id}",
    response_model=ProductPublic,
    responses={304: {}, 404: {}},
    name="get_product",
)
async def document_get_product(
    product_id: ProductId,
    user: CurrentUser,
    if_none_match: Annotated[str | None, Header(max_length=MAX_IF_NONE_MATCH)] = None,
) -> Response:
    # The OpenAPI operation of `get_product` above, which serves it: Starlette matches that
    # route first, so FastAPI never calls this one.
    raise AssertionError("GET /products/{product_id} is served by get_product")


@router.get("", response_model=ProductPage)
async def list_products(
    user: CurrentUser,
    uow: ReadUowDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=1024)] = None,
    sort: ProductSort = ProductSort.NEWEST,
    min_price: PriceFilter = None,
    max_price: PriceFilter = None,
    name: Annotated[Text | None, Query(min_length=1, max_length=255)] = None,
    sku: Annotated[Text | None, Query(min_length=1, max_length=64)] = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    query = ProductQuery(
        owner_id=user.id,
        sort=sort,
        limit=limit,
        min_price=min_price,
        max_price=max_price,
        name=name,
        sku=sku,
        after=decode_cursor(cursor, sort.value) if cursor else None,
    )
    page = await products.list_products(uow, user, query, user_id=user_id)
    next_cursor = encode_cursor(page.next_cursor, sort.value) if page.next_cursor else None
    return Response(product_page_json(page.items, next_cursor), media_type=JSON)


@router.patch("/{product_id}", response_model=ProductPublic, responses={404: {}, 409: {}})
async def update_product(
    product_id: ProductId,
    body: ProductUpdate,
    user: CurrentUser,
    uow: UowDep,
    request_id: RequestId,
) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if "product_images" in changes:
        changes["product_images"] = tuple(changes["product_images"])
    product = await products.update_product(
        uow, user, product_id, ProductPatch(**changes), request_id
    )
    return Response(product_json(product), media_type=JSON)


@router.delete("/{product_id}", status_code=204, responses={404: {}})
async def delete_product(product_id: ProductId, user: CurrentUser, uow: UowDep) -> Response:
    await products.delete_product(uow, user, product_id)
    return Response(status_code=204)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison over a list of tags, or `*`."""
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates

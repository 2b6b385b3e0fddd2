"""The product resource over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import Account

LAMP = {
    "product_name": "Desk lamp",
    "product_description": "A lamp for a desk",
    "product_price": "19.99",
    "product_images": ["https://images.example.com/a.jpg", "https://images.example.com/b.png"],
}


async def create(client: httpx.AsyncClient, who: Account, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/products", json={**LAMP, **overrides}, headers=who.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_create_returns_201_with_location_and_pending_images(
    client: httpx.AsyncClient, alice: Account
) -> None:
    response = await client.post("/products", json=LAMP, headers=alice.headers)

    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/products/{body['id']}"
    assert body["user_id"] == alice.id
    assert body["product_price"] == 19.99
    assert body["product_images"] == LAMP["product_images"]
    assert body["compressed_product_images"] == [None, None]
    assert [image["status"] for image in body["images"]] == ["pending", "pending"]
    assert body["created_at"].endswith("Z")


async def test_price_is_exact_through_storage(client: httpx.AsyncClient, alice: Account) -> None:
    for raw, expected in [("0.10", 0.1), (0.29, 0.29), ("99999999.99", 99999999.99), (7, 7)]:
        created = await create(client, alice, product_price=raw)
        fetched = (await client.get(f"/products/{created['id']}", headers=alice.headers)).json()
        assert fetched["product_price"] == expected


async def test_get_sends_etag_and_304_for_a_matching_if_none_match(
    client: httpx.AsyncClient, alice: Account
) -> None:
    product = await create(client, alice, product_images=[])  # nothing changes it meanwhile
    first = await client.get(f"/products/{product['id']}", headers=alice.headers)
    etag = first.headers["etag"]

    again = await client.get(
        f"/products/{product['id']}", headers={**alice.headers, "If-None-Match": etag}
    )
    other = await client.get(
        f"/products/{product['id']}", headers={**alice.headers, "If-None-Match": '"nope"'}
    )

    assert first.headers["x-cache"] in ("HIT", "MISS")
    assert again.status_code == 304
    assert again.content == b""
    assert other.status_code == 200


async def test_someone_elses_product_is_a_404_everywhere(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    product = await create(client, alice)
    url = f"/products/{product['id']}"

    assert (await client.get(url, headers=bob.headers)).status_code == 404
    assert (await client.patch(url, json={"sku": "x"}, headers=bob.headers)).status_code == 404
    assert (await client.delete(url, headers=bob.headers)).status_code == 404
    listed = (await client.get("/products", headers=bob.headers)).json()
    assert listed["items"] == []
    assert (await client.get(url, headers=alice.headers)).status_code == 200


async def test_admin_sees_any_product_and_lists_any_user(
    client: httpx.AsyncClient, alice: Account, admin: Account
) -> None:
    product = await create(client, alice)

    assert (
        await client.get(f"/products/{product['id']}", headers=admin.headers)
    ).status_code == 200
    listed = await client.get(f"/products?user_id={alice.id}", headers=admin.headers)
    assert [p["id"] for p in listed.json()["items"]] == [product["id"]]


async def test_user_cannot_list_or_create_for_another_user(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    listed = await client.get(f"/products?user_id={bob.id}", headers=alice.headers)
    created = await client.post(
        "/products", json={**LAMP, "user_id": bob.id}, headers=alice.headers
    )

    assert listed.status_code == 403
    assert created.status_code == 403


async def test_admin_creating_for_a_missing_user_gets_422(
    client: httpx.AsyncClient, admin: Account
) -> None:
    response = await client.post(
        "/products", json={**LAMP, "user_id": 999999}, headers=admin.headers
    )

    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "user_id", "message": "no user with this id"}]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"product_price": -1}, "product_price"),
        ({"product_price": "1.999"}, "product_price"),
        ({"product_price": 100000000}, "product_price"),
        ({"product_price": "abc"}, "product_price"),
        ({"product_price": True}, "product_price"),
        ({"product_name": "x" * 256}, "product_name"),
        ({"product_name": ""}, "product_name"),
        ({"product_name": "   "}, "product_name"),
        ({"product_name": "nul\x00byte"}, "product_name"),
        ({"product_description": "d" * 10_001}, "product_description"),
        ({"product_images": ["ftp://example.com/a.jpg"]}, "product_images[0]"),
        ({"product_images": ["https://ok.example/a.jpg", "/relative.jpg"]}, "product_images[1]"),
        ({"product_images": ["https://example.com/" + "a" * 2048]}, "product_images[0]"),
        ({"product_images": [f"https://example.com/{i}.jpg" for i in range(21)]}, "product_images"),
        ({"sku": ""}, "sku"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_fields_are_422_naming_the_field(
    client: httpx.AsyncClient, alice: Account, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post("/products", json={**LAMP, **overrides}, headers=alice.headers)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]
    assert (await client.get("/products", headers=alice.headers)).json()["items"] == []


async def test_every_invalid_field_is_listed_at_once(
    client: httpx.AsyncClient, alice: Account
) -> None:
    body = {"product_name": "", "product_price": "-2", "product_images": ["nope", "https://x.y/z"]}

    response = await client.post("/products", json=body, headers=alice.headers)

    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"product_name", "product_price", "product_images[0]"}


async def test_malformed_json_is_400_and_never_500(
    client: httpx.AsyncClient, alice: Account
) -> None:
    response = await client.post(
        "/products",
        content=b'{"product_name": ',
        headers={**alice.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_missing_or_bad_token_is_401_with_www_authenticate(
    client: httpx.AsyncClient,
) -> None:
    for headers in ({}, {"Authorization": "Bearer sr_wrong"}, {"Authorization": "Basic abc"}):
        response = await client.get("/products", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_duplicate_sku_for_the_same_user_is_409(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    await create(client, alice, sku="A-100")

    again = await client.post("/products", json={**LAMP, "sku": "A-100"}, headers=alice.headers)
    other_user = await client.post("/products", json={**LAMP, "sku": "A-100"}, headers=bob.headers)

    assert again.status_code == 409
    assert other_user.status_code == 201


async def test_idempotency_key_replays_the_first_response_and_creates_nothing_new(
    client: httpx.AsyncClient, alice: Account
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "order-1"}
    first = await client.post("/products", json=LAMP, headers=headers)
    second = await client.post("/products", json=LAMP, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert len((await client.get("/products", headers=alice.headers)).json()["items"]) == 1


async def test_idempotency_key_with_a_different_body_is_409(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "order-2"}
    await client.post("/products", json=LAMP, headers=headers)

    changed = await client.post("/products", json={**LAMP, "product_price": "1"}, headers=headers)
    bobs = await client.post(
        "/products", json=LAMP, headers={**bob.headers, "Idempotency-Key": "order-2"}
    )

    assert changed.status_code == 409
    assert bobs.status_code == 201


async def test_patch_changes_fields_and_get_shows_it_at_once(
    client: httpx.AsyncClient, alice: Account
) -> None:
    product = await create(client, alice)
    url = f"/products/{product['id']}"
    await client.get(url, headers=alice.headers)

    patched = await client.patch(
        url, json={"product_name": "Floor lamp", "product_price": 5}, headers=alice.headers
    )
    fetched = await client.get(url, headers=alice.headers)

    assert patched.status_code == 200
    assert fetched.json()["product_name"] == "Floor lamp"
    assert fetched.json()["product_price"] == 5
    assert fetched.json()["product_description"] == LAMP["product_description"]


async def test_patch_images_keeps_rows_of_urls_that_stay(
    client: httpx.AsyncClient, alice: Account
) -> None:
    product = await create(client, alice)
    a, _b = LAMP["product_images"]
    c = "https://images.example.com/c.webp"

    patched = await client.patch(
        f"/products/{product['id']}", json={"product_images": [c, a]}, headers=alice.headers
    )

    body = patched.json()
    assert body["product_images"] == [c, a]
    assert body["compressed_product_images"] == [None, None]
    assert len(body["images"]) == 2


async def test_patch_null_on_a_required_field_is_422(
    client: httpx.AsyncClient, alice: Account
) -> None:
    product = await create(client, alice)

    response = await client.patch(
        f"/products/{product['id']}", json={"product_name": None}, headers=alice.headers
    )

    assert response.status_code == 422


async def test_delete_is_204_then_404(client: httpx.AsyncClient, alice: Account) -> None:
    product = await create(client, alice)
    url = f"/products/{product['id']}"

    assert (await client.delete(url, headers=alice.headers)).status_code == 204
    assert (await client.get(url, headers=alice.headers)).status_code == 404
    assert (await client.delete(url, headers=alice.headers)).status_code == 404


async def test_list_filters_by_price_range_name_and_sku(
    client: httpx.AsyncClient, alice: Account
) -> None:
    await create(client, alice, product_name="Red Lamp", product_price="10.00", sku="R")
    await create(client, alice, product_name="Blue lamp", product_price="20.00", sku="B")
    await create(client, alice, product_name="Chair", product_price="30.00")
    await create(client, alice, product_name="100% wool_rug", product_price="40.00")

    async def names(query: str) -> list[str]:
        response = await client.get(f"/products?{query}", headers=alice.headers)
        assert response.status_code == 200, response.text
        return sorted(p["product_name"] for p in response.json()["items"])

    assert await names("name=LAMP") == ["Blue lamp", "Red Lamp"]
    assert await names("min_price=15&max_price=30") == ["Blue lamp", "Chair"]
    assert await names("name=lamp&max_price=10") == ["Red Lamp"]
    assert await names("sku=B") == ["Blue lamp"]
    assert await names("name=%25") == ["100% wool_rug"]
    assert await names("name=e_l") == []  # "_" is literal, not a wildcard
    assert await names("min_price=10.001") == ["100% wool_rug", "Blue lamp", "Chair"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-created_at", ["D", "C", "B", "A"]),
        ("created_at", ["A", "B", "C", "D"]),
        ("product_price", ["C", "A", "D", "B"]),
        ("-product_price", ["B", "D", "A", "C"]),
        ("product_name", ["A", "B", "C", "D"]),
    ],
)
async def test_cursor_pagination_walks_every_sort_without_gaps_or_repeats(
    client: httpx.AsyncClient, alice: Account, sort: str, expected: list[str]
) -> None:
    for name, price in [("A", "2"), ("B", "9"), ("C", "1"), ("D", "2")]:
        await create(client, alice, product_name=name, product_price=price)

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"sort": sort, "limit": "1", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/products", params=params, headers=alice.headers)).json()
        seen += [p["product_name"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == expected
    assert cursor is None


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "sort=price", "min_price=-1", "cursor=garbage", "min_price=abc"],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, alice: Account, query: str
) -> None:
    response = await client.get(f"/products?{query}", headers=alice.headers)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_cursor_from_another_sort_is_refused(
    client: httpx.AsyncClient, alice: Account
) -> None:
    for name in "AB":
        await create(client, alice, product_name=name)
    page = (await client.get("/products?limit=1", headers=alice.headers)).json()

    response = await client.get(
        f"/products?limit=1&sort=product_price&cursor={page['next_cursor']}",
        headers=alice.headers,
    )

    assert response.status_code == 422


async def test_a_body_that_is_not_json_is_415(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post(
        "/products",
        content=b"product_name=Lamp",
        headers={**alice.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_body_over_the_limit_is_413_before_it_is_parsed(
    client: httpx.AsyncClient, alice: Account
) -> None:
    huge = {**LAMP, "product_description": "x" * (2 * 1024 * 1024)}

    response = await client.post("/products", json=huge, headers=alice.headers)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert "x-request-id" in response.headers


async def test_a_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, alice: Account
) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: only counting stops it
        yield b'{"product_name": "Lamp", "product_price": "1", "product_description": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/products",
        content=chunks(),
        headers={**alice.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 413


@pytest.mark.parametrize(
    ("product_id", "message"),
    [
        ("abc", "valid integer"),
        ("0", "greater than or equal to 1"),
        ("-1", "greater than or equal to 1"),
        (str(2**63), "less than or equal to 9223372036854775807"),
    ],
)
async def test_a_bad_product_id_is_422_naming_it(
    client: httpx.AsyncClient, alice: Account, product_id: str, message: str
) -> None:
    response = await client.get(f"/products/{product_id}", headers=alice.headers)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "product_id"
    assert message in error["message"]


async def test_get_without_a_valid_token_is_401_whatever_the_id(
    client: httpx.AsyncClient,
) -> None:
    for headers in ({}, {"Authorization": "Bearer sr_wrong"}, {"Authorization": "Basic abc"}):
        for path in ("/products/1", "/products/abc"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_an_overlong_if_none_match_is_422(client: httpx.AsyncClient, alice: Account) -> None:
    created = await client.post("/products", json=LAMP, headers=alice.headers)

    response = await client.get(
        f"/products/{created.json()['id']}", headers={**alice.headers, "If-None-Match": "x" * 1025}
    )

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["if-none-match"]


async def test_head_answers_like_get_without_a_body(
    client: httpx.AsyncClient, alice: Account
) -> None:
    product = await create(client, alice, product_images=[])  # nothing changes it meanwhile
    path = f"/products/{product['id']}"

    got = await client.get(path, headers=alice.headers)
    head = await client.head(path, headers=alice.headers)

    assert head.status_code == 200
    assert head.headers["etag"] == got.headers["etag"]
    assert head.content == b""


async def test_get_by_id_is_documented_and_labelled_by_its_route(
    client: httpx.AsyncClient, alice: Account
) -> None:
    """GET /products/{id} is served outside FastAPI's routing (docs/performance.md): its
    OpenAPI operation and its metrics label must not notice."""
    created = await client.post("/products", json=LAMP, headers=alice.headers)
    await client.get(f"/products/{created.json()['id']}", headers=alice.headers)

    schema = (await client.get("/openapi.json")).json()
    metrics = (await client.get("/metrics")).text

    operation = schema["paths"]["/products/{product_id}"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"product_id", "if-none-match"}
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/ProductPublic")
    assert operation["operationId"] == "products-get_product"
    labelled = 'method="GET",route="/products/{product_id}",status="200"'
    assert labelled in metrics

"""Idempotency-Key on every creating POST: the first response again, byte for byte, and
never data the caller can no longer see; records expire. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from tests.conftest import Account

from stockroom.db.tables import idempotency_keys
from stockroom.domain.queries import IdempotencyRecord
from stockroom.services import Services

LAMP = {"product_name": "Desk lamp", "product_description": "Alice's", "product_price": "5"}


async def test_a_replay_is_the_first_response_byte_for_byte(
    client: httpx.AsyncClient, alice: Account
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "lamp-1"}
    first = await client.post("/products", json=LAMP, headers=headers)
    again = await client.post("/products", json=LAMP, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


async def test_a_replay_never_shows_what_the_product_became_for_someone_else(
    client: httpx.AsyncClient, alice: Account, bob: Account, admin: Account
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "lamp-2"}
    first = await client.post("/products", json=LAMP, headers=headers)
    url = f"/products/{first.json()['id']}"
    moved = await client.patch(url, json={"user_id": bob.id}, headers=admin.headers)
    edited = await client.patch(
        url, json={"product_description": "Bob's secret"}, headers=bob.headers
    )
    assert moved.status_code == edited.status_code == 200

    again = await client.post("/products", json=LAMP, headers=headers)

    assert again.status_code == 201
    assert again.content == first.content
    assert "Bob's secret" not in again.text


async def test_post_users_replays_the_same_user_and_token(
    client: httpx.AsyncClient, admin: Account
) -> None:
    headers = {**admin.headers, "Idempotency-Key": "new-user-1"}
    body = {"email": "carol@example.com", "name": "Carol"}
    first = await client.post("/users", json=body, headers=headers)
    again = await client.post("/users", json=body, headers=headers)
    other = await client.post("/users", json={**body, "name": "C"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    carol = {"Authorization": f"Bearer {first.json()['token']}"}
    assert (await client.get("/me", headers=carol)).json()["email"] == "carol@example.com"


async def test_post_me_tokens_replays_the_token_stored_sealed(
    client: httpx.AsyncClient, alice: Account, services: Services
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "token-1"}
    first = await client.post("/me/tokens", json={"name": "ci"}, headers=headers)
    again = await client.post("/me/tokens", json={"name": "ci"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json()["token"] == first.json()["token"]
    async with services.engine.connect() as connection:
        stored = (await connection.execute(select(idempotency_keys.c.sealed_body))).scalars()
        bodies = [bytes(body) for body in stored]
    assert bodies
    assert not any(first.json()["token"].encode() in body for body in bodies)


async def test_a_replay_with_another_token_of_the_same_user_is_409(
    client: httpx.AsyncClient, alice: Account
) -> None:
    second_token = (await client.post("/me/tokens", headers=alice.headers)).json()["token"]
    await client.post("/products", json=LAMP, headers={**alice.headers, "Idempotency-Key": "k"})

    again = await client.post(
        "/products",
        json=LAMP,
        headers={"Authorization": f"Bearer {second_token}", "Idempotency-Key": "k"},
    )

    assert again.status_code == 409


async def test_expired_records_are_purged_a_batch_at_a_time(
    services: Services, alice: Account
) -> None:
    now = datetime.now(UTC)
    async with services.uow() as uow:
        for index in range(5):
            await uow.idempotency.add(
                IdempotencyRecord(
                    user_id=alice.id,
                    scope="products.create",
                    key=f"old-{index}",
                    fingerprint="f",
                    status_code=201,
                    sealed_body=b"x",
                    location=None,
                    created_at=now - timedelta(days=2),
                    expires_at=now - timedelta(days=1, minutes=index),
                )
            )
        await uow.idempotency.add(
            IdempotencyRecord(
                user_id=alice.id,
                scope="products.create",
                key="fresh",
                fingerprint="f",
                status_code=201,
                sealed_body=b"x",
                location=None,
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
        await uow.commit()

    async with services.uow() as uow:
        purged = await uow.idempotency.purge_expired(now, 3)
        await uow.commit()
    async with services.uow() as uow:
        left = [
            key
            for key in ("old-0", "old-1", "old-2", "old-3", "old-4", "fresh")
            if await uow.idempotency.get(alice.id, "products.create", key) is not None
        ]

    assert purged == 3
    assert left == ["old-0", "old-1", "fresh"]  # the longest expired went first

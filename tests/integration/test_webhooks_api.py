"""Webhooks of standalone jobs and imports, end to end through the embedded pipeline: signed as
Standard Webhooks (verified by the receiver with the `standardwebhooks` library), retried
with the same webhook-id, every attempt listed by GET /webhooks/deliveries."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Account
from tests.support.csv_files import HEADER, csv_bytes
from tests.support.image_server import ImageServer
from tests.support.settings import pipeline_settings
from tests.support.waiting import eventually, settled_job
from tests.support.webhook_receiver import WebhookReceiver, receive_webhooks

from stockroom.config import Settings
from stockroom.domain import users, webhook_delivery
from stockroom.services import Services

SECRET = "whsec_" + base64.b64encode(b"a test signing key of 32 bytes!!").decode()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return pipeline_settings(
        database_url,
        tmp_path / "media",
        job_max_retries=0,
        webhook_secret=SECRET,
        webhook_retry_schedule="0.2,0.2,0.2",
        webhook_timeout_seconds=2,
    )


@pytest.fixture
def receiver() -> Any:
    with receive_webhooks(SECRET) as running:
        yield running


async def deliveries(client: httpx.AsyncClient, who: Account, **filters: str) -> list[Any]:
    response = await client.get("/webhooks/deliveries", params=filters, headers=who.headers)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def test_a_succeeded_job_posts_a_signed_job_succeeded(
    client: httpx.AsyncClient, alice: Account, images: ImageServer, receiver: WebhookReceiver
) -> None:
    accepted = await client.post(
        "/jobs",
        json={"image_url": images.url("image.jpg"), "callback_url": receiver.url("ok")},
        headers=alice.headers,
    )
    job = await settled_job(client, accepted.json()["id"], alice.headers)

    async def delivered() -> list[Any] | None:
        return await deliveries(client, alice, job_id=job["id"]) or None

    (attempt,) = await eventually(delivered)
    (request,) = receiver.requests
    assert request.verify_error is None
    assert request.payload is not None
    assert request.payload["type"] == "job.succeeded"
    assert request.payload["data"]["id"] == job["id"]
    assert request.payload["data"]["status"] == "succeeded"
    assert request.payload["data"]["output_url"] == job["output_url"]
    assert request.headers["webhook-id"] == attempt["webhook_id"]
    assert attempt["type"] == "job.succeeded"
    assert attempt["url"] == receiver.url("ok")
    assert (attempt["attempt"], attempt["status_code"], attempt["error"]) == (1, 200, None)


async def test_a_500_is_retried_with_the_same_webhook_id(
    client: httpx.AsyncClient, alice: Account, receiver: WebhookReceiver
) -> None:
    accepted = await client.post(
        "/jobs",
        json={
            "image_url": "http://127.0.0.1:9/missing.jpg",  # nothing listens: the job fails
            "callback_url": receiver.url("flaky/1"),
        },
        headers=alice.headers,
    )
    job = await settled_job(client, accepted.json()["id"], alice.headers)
    assert job["status"] == "failed"

    async def two_attempts() -> list[Any] | None:
        found = await deliveries(client, alice, job_id=job["id"])
        return found if len(found) == 2 else None

    second, first = await eventually(two_attempts, timeout=20)
    assert (first["attempt"], first["status_code"]) == (1, 500)
    assert first["error"] == "answered 500"
    assert (second["attempt"], second["status_code"]) == (2, 200)
    assert first["webhook_id"] == second["webhook_id"]
    assert [r.headers["webhook-id"] for r in receiver.requests] == [first["webhook_id"]] * 2
    assert all(r.verify_error is None for r in receiver.requests)
    payloads = [r.payload for r in receiver.requests]
    assert [p["type"] for p in payloads if p is not None] == ["job.failed"] * 2
    assert payloads[0] is not None
    assert payloads[0]["data"]["error_code"] == job["error_code"]


async def test_410_stops_the_retries(
    client: httpx.AsyncClient, alice: Account, receiver: WebhookReceiver
) -> None:
    accepted = await client.post(
        "/jobs",
        json={"image_url": "http://127.0.0.1:9/a.jpg", "callback_url": receiver.url("status/410")},
        headers=alice.headers,
    )
    job_id = accepted.json()["id"]
    await settled_job(client, job_id, alice.headers)

    async def attempted() -> list[Any] | None:
        return await deliveries(client, alice, job_id=job_id) or None

    (only,) = await eventually(attempted)
    assert only["status_code"] == 410
    await _quiet(client, alice, job_id, 1)


async def test_deliveries_are_the_callers_own(
    client: httpx.AsyncClient,
    alice: Account,
    bob: Account,
    images: ImageServer,
    receiver: WebhookReceiver,
) -> None:
    accepted = await client.post(
        "/jobs",
        json={"image_url": images.url("image.png"), "callback_url": receiver.url("ok")},
        headers=alice.headers,
    )
    job_id = accepted.json()["id"]

    async def delivered() -> list[Any] | None:
        return await deliveries(client, alice, job_id=job_id) or None

    await eventually(delivered)
    assert await deliveries(client, bob) == []
    assert await deliveries(client, bob, job_id=job_id) == []


async def test_a_finished_import_posts_import_completed(
    client: httpx.AsyncClient, alice: Account, images: ImageServer, receiver: WebhookReceiver
) -> None:
    rows = [list(HEADER[:3]), ["S-1", "Lamp", images.url("image.jpg")], ["S-2", "Desk", ""]]
    accepted = await client.post(
        "/imports",
        files={"file": ("catalogue.csv", csv_bytes(rows), "text/csv")},
        data={"callback_url": receiver.url("ok")},
        headers=alice.headers,
    )
    assert accepted.status_code == 202, accepted.text
    import_id = accepted.json()["request_id"]

    async def delivered() -> list[Any] | None:
        return await deliveries(client, alice, import_id=import_id) or None

    (attempt,) = await eventually(delivered, timeout=30)
    assert attempt["type"] == "import.completed"
    (request,) = receiver.requests
    assert request.verify_error is None
    assert request.payload is not None
    data = request.payload["data"]
    assert (data["request_id"], data["status"], data["rows"]) == (import_id, "completed", 2)
    assert (data["images_total"], data["images_done"], data["images_failed"]) == (1, 1, 0)
    assert data["output_url"] == f"/imports/{import_id}/output.csv"


class TestPrivateCallbacks:
    """With private networks refused (the default), a callback to loopback is refused at
    delivery, on the address connected to, and never retried."""

    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return pipeline_settings(
            database_url,
            tmp_path / "media",
            allow_private_networks=False,
            job_max_retries=0,
            webhook_secret=SECRET,
            webhook_retry_schedule="0.2",
        )

    async def test_a_callback_on_a_private_address_is_refused(
        self, client: httpx.AsyncClient, alice: Account, receiver: WebhookReceiver
    ) -> None:
        accepted = await client.post(
            "/jobs",
            json={"image_url": "http://127.0.0.1:9/a.jpg", "callback_url": receiver.url("ok")},
            headers=alice.headers,
        )
        job_id = accepted.json()["id"]
        await settled_job(client, job_id, alice.headers)

        async def attempted() -> list[Any] | None:
            return await deliveries(client, alice, job_id=job_id) or None

        (only,) = await eventually(attempted)
        assert only["status_code"] is None
        assert only["error"] == "address not allowed"
        assert receiver.requests == []
        await _quiet(client, alice, job_id, 1)


class TestWithoutASecret:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return pipeline_settings(database_url, tmp_path / "media")

    @pytest.mark.parametrize("path", ["/jobs", "/jobs/upload-url"])
    async def test_a_callback_is_refused_at_submission(
        self, client: httpx.AsyncClient, alice: Account, path: str
    ) -> None:
        body: dict[str, Any] = {"callback_url": "https://hooks.example.com/x"}
        if path == "/jobs":
            body["image_url"] = "https://img.example.com/a.jpg"
        else:
            body |= {"content_type": "image/jpeg", "bytes": 100}
        response = await client.post(path, json=body, headers=alice.headers)

        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == ["callback_url"]


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example.com/x", "https://user:pw@hooks.example.com/x", "not a url"],
)
async def test_a_bad_callback_url_is_422(
    client: httpx.AsyncClient, alice: Account, url: str
) -> None:
    response = await client.post(
        "/jobs",
        json={"image_url": "https://img.example.com/a.jpg", "callback_url": url},
        headers=alice.headers,
    )

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["callback_url"]


async def _quiet(client: httpx.AsyncClient, who: Account, job_id: str, expected: int) -> None:
    """No attempt beyond `expected` comes within several retry delays."""
    import asyncio

    await asyncio.sleep(1.5)
    assert len(await deliveries(client, who, job_id=job_id)) == expected


async def test_webhooks_whose_queue_message_was_lost_are_queued_again(
    bare_services: Services,
) -> None:
    """The SQL of `pending`, on both engines (no relay running): a message still to deliver
    whose outbox row was published, to a queue that then lost it, is queued again, once."""
    services = bare_services
    user, _ = await users.create_user(services.uow(), email="lost@example.com")
    message = webhook_delivery.new_webhook(user.id, "job.failed", "http://127.0.0.1:9/x", {})
    async with services.uow() as uow:
        await webhook_delivery.queue_webhook(uow, message)
        await uow.commit()
    assert await webhook_delivery.requeue_pending(services.uow()) == 0  # still in the outbox
    async with services.uow() as uow:
        claimed = await uow.outbox.claim(100)
        await uow.outbox.mark_published([m.id for m in claimed if m.job_id == message.id])
        await uow.commit()

    assert await webhook_delivery.requeue_pending(services.uow()) == 1
    assert await webhook_delivery.requeue_pending(services.uow()) == 0

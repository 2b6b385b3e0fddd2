"""The image pipeline end to end in embedded mode (in-process broker and workers), on
SQLite and PostgreSQL, with images served by a local HTTP server."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs
from tests.conftest import Account, make_account
from tests.support.image_server import ImageServer
from tests.support.products import new_product
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import REDIS_URL
from tests.support.settings import make_settings, pipeline_settings
from tests.support.waiting import create_lamp, eventually, settled_lamp, settled_product

from stockroom.app import create_app
from stockroom.bootstrap import Role, Services, bootstrap
from stockroom.config import Settings
from stockroom.domain import users
from stockroom.domain.queries import NewProduct


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Private addresses allowed (the image server is on loopback); quick retries."""
    return pipeline_settings(database_url, tmp_path / "media", worker_threads=2)


async def test_good_images_become_ready_and_bad_ones_fail_in_order(
    client: httpx.AsyncClient, alice: Account, images: ImageServer, tmp_path: Path
) -> None:
    urls = [
        images.url("image.jpg"),
        images.url("image.png"),
        images.url("status/404"),
        images.url("text.txt"),
    ]
    product = await settled_lamp(client, alice.headers, urls)

    assert product["product_images"] == urls
    assert [image["status"] for image in product["images"]] == [
        "ready",
        "ready",
        "failed",
        "failed",
    ]
    assert [image["error_code"] for image in product["images"]] == [
        None,
        None,
        "http_4xx",
        "not_an_image",
    ]
    jpeg, png, missing, text = product["compressed_product_images"]
    assert jpeg.startswith("http://testserver/media/img/")
    assert jpeg.endswith(".jpg")
    assert png.endswith(".png")  # transparency keeps an alpha-capable format
    assert missing is None
    assert text is None
    served = await client.get(jpeg.removeprefix("http://testserver"))
    assert served.status_code == 200
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert served.content[:2] == b"\xff\xd8"
    assert product["images"][0]["bytes_out"] <= product["images"][0]["bytes_in"]


async def test_transient_failures_retry_then_dead_letter_and_can_be_redriven(
    client: httpx.AsyncClient, alice: Account, admin: Account, images: ImageServer
) -> None:
    product = await settled_lamp(client, alice.headers, [images.url("status/503")])

    assert product["images"][0]["status"] == "failed"
    assert product["images"][0]["error_code"] == "retries_exhausted"
    letters = (await client.get("/admin/dead-letters", headers=admin.headers)).json()["items"]
    assert len(letters) == 1
    assert letters[0]["attempts"] == 3  # the first try and two retries
    assert letters[0]["error_code"] == "retries_exhausted"
    assert (await client.get("/admin/dead-letters", headers=alice.headers)).status_code == 403
    unknown = await client.get(f"/admin/dead-letters?cursor={'0' * 32}", headers=admin.headers)
    assert unknown.status_code == 422
    metrics = (await client.get("/metrics")).text
    assert 'stockroom_image_jobs_in_state{state="dead_lettered"} 1.0' in metrics
    assert 'stockroom_image_jobs_total{outcome="retried"}' in metrics

    redriven = await client.post(
        f"/admin/dead-letters/{letters[0]['id']}/retry", headers=admin.headers
    )

    assert redriven.status_code == 202
    again = await settled_product(client, product["id"], alice.headers)
    assert again["images"][0]["error_code"] == "retries_exhausted"
    after = (await client.get("/admin/dead-letters", headers=admin.headers)).json()["items"]
    assert [letter["attempts"] for letter in after] == [3]  # it ran its retries again


async def test_patch_queues_only_new_urls_and_keeps_results_of_the_rest(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    jpeg, png = images.url("image.jpg"), images.url("image.png")
    first = await settled_lamp(client, alice.headers, [jpeg])

    patched = await client.patch(
        f"/products/{first['id']}", json={"product_images": [png, jpeg]}, headers=alice.headers
    )

    assert patched.json()["images"][1] == first["images"][0]  # kept, result and all
    assert patched.json()["images"][0]["status"] in ("pending", "processing")
    second = await settled_product(client, first["id"], alice.headers)
    assert [image["status"] for image in second["images"]] == ["ready", "ready"]
    assert second["compressed_product_images"][1] == first["compressed_product_images"][0]


async def test_refused_address_fails_as_blocked_when_private_networks_are_off(
    settings: Settings, images: ImageServer
) -> None:
    # An app with the default: private networks refused.
    strict = create_app(settings.model_copy(update={"allow_private_networks": False}))
    async with strict.router.lifespan_context(strict):
        owner = await make_account(strict.state.services, f"strict-{uuid.uuid4().hex}@example.com")
        transport = httpx.ASGITransport(app=strict)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            urls = [images.url("image.jpg"), "http://2130706433/a.jpg"]
            product = await settled_lamp(http, owner.headers, urls)

    assert [image["error_code"] for image in product["images"]] == [
        "blocked_address",
        "blocked_address",
    ]


async def test_delete_removes_processed_files_that_no_other_image_uses(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    jpeg, png = images.url("image.jpg"), images.url("image.png")
    body = {"product_name": "Lamp", "product_price": "5"}
    first = (
        await client.post(
            "/products", json={**body, "product_images": [jpeg, png]}, headers=alice.headers
        )
    ).json()
    second = (
        await client.post(
            "/products", json={**body, "product_images": [jpeg]}, headers=alice.headers
        )
    ).json()
    done = await settled_product(client, first["id"], alice.headers)
    await settled_product(client, second["id"], alice.headers)
    shared, only_first = (
        url.removeprefix("http://testserver") for url in done["compressed_product_images"]
    )

    assert (
        await client.delete(f"/products/{first['id']}", headers=alice.headers)
    ).status_code == 204

    assert (await client.get(only_first)).status_code == 404
    assert (await client.get(shared)).status_code == 200  # the second product still uses it


async def test_a_job_replaced_by_a_patch_while_processing_does_not_overwrite_the_new_image(
    client: httpx.AsyncClient, services: Services, alice: Account, images: ImageServer
) -> None:
    slow, png = images.url("slow/1.5"), images.url("image.png")
    created = await create_lamp(client, alice.headers, [slow])
    url = f"/products/{created['id']}"

    async def processing() -> bool:
        body = (await client.get(url, headers=alice.headers)).json()
        return bool(body["images"][0]["status"] == "processing")

    await eventually(processing, timeout=10, interval=0.02)
    await client.patch(url, json={"product_images": [png]}, headers=alice.headers)
    product = await settled_product(client, created["id"], alice.headers)

    async def every_job_finished() -> bool:  # the replaced one too, slow as it is
        async with services.uow() as uow:
            jobs = await uow.image_jobs.search(user_id=alice.id)
        return len(jobs) == 2 and all(job.finished for job in jobs)

    await eventually(every_job_finished, timeout=15)
    again = (await client.get(url, headers=alice.headers)).json()

    assert product["product_images"] == [png]
    assert again["images"] == product["images"]
    assert again["compressed_product_images"][0].endswith(".png")


async def test_jobs_a_previous_run_left_unfinished_are_processed_at_start(
    settings: Settings, images: ImageServer
) -> None:
    """The in-memory queue dies with its process: jobs it held are queued again at start."""
    services = await bootstrap(settings, Role.CLI)
    try:
        alice = await make_account(services, "restart@example.com")
        user = await users.authenticate(services.lookups, alice.token)
        created = await new_product(
            services.uow(),
            user,
            NewProduct(
                product_name="Lamp",
                product_price=Decimal("5"),
                product_images=(images.url("image.jpg"),),
            ),
        )
        async with services.uow() as uow:  # as if the relay had handed it to the dead queue
            await uow.outbox.mark_published([m.id for m in await uow.outbox.claim(100)])
            await uow.commit()
    finally:
        await services.aclose()

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            product = await settled_product(http, created.id, alice.headers)

    assert product["images"][0]["status"] == "ready"


@pytest.mark.redis
async def test_embedded_worker_with_a_redis_cache_keeps_the_api_reading_it(
    database_url: str, tmp_path: Path, images: ImageServer
) -> None:
    """The embedded actors run on the API's event loop with the API's Redis client: a job's
    invalidation goes through the same client that serves, and both keep working."""
    require_redis()
    prefix = unique_prefix()
    settings = make_settings(
        database_url,
        tmp_path / "media",
        allow_private_networks=True,
        cache_url=REDIS_URL,
        cache_key_prefix=prefix,
    )
    application = create_app(settings)
    try:
        with capture_logs() as logged:
            async with application.router.lifespan_context(application):
                transport = httpx.ASGITransport(app=application)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://testserver"
                ) as client:
                    alice = await make_account(application.state.services, f"{prefix}@example.com")
                    urls = [images.url("image.jpg")]
                    product = await settled_lamp(client, alice.headers, urls)
                    assert [i["status"] for i in product["images"]] == ["ready"]
                    # The worker's invalidation reached Redis, and the API still reads it.
                    first = await client.get(f"/products/{product['id']}", headers=alice.headers)
                    again = await client.get(f"/products/{product['id']}", headers=alice.headers)
                    assert (first.status_code, again.status_code) == (200, 200)
                    assert again.headers["X-Cache"] == "HIT"
                    assert (
                        again.json()["compressed_product_images"]
                        == product["compressed_product_images"]
                    )
        errors = [e for e in logged if e["log_level"] in ("error", "critical")]
        assert errors == []
    finally:
        client_ = require_redis()
        await delete_prefix(client_, prefix)
        await client_.aclose()


async def test_two_embedded_apps_in_one_process_each_run_their_jobs(
    settings: Settings, images: ImageServer
) -> None:
    """Each embedded worker runs its jobs on its own app's event loop and services: nothing
    is global to the process (as Dramatiq's AsyncIO middleware's event-loop thread was)."""
    first, second = create_app(settings), create_app(settings)
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        for application in (first, second):
            owner = await make_account(
                application.state.services, f"twin-{uuid.uuid4().hex}@example.com"
            )
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                product = await settled_lamp(http, owner.headers, [images.url("image.jpg")])
            assert [image["status"] for image in product["images"]] == ["ready"]

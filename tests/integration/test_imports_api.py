"""CSV bulk imports (POST /imports, GET /imports/{id}, output.csv) through the embedded
pipeline on SQLite and PostgreSQL, with images served by a local HTTP server; and one on the
production shape (RabbitMQ, worker processes) with a worker killed mid-import."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from tests.conftest import Account, make_account
from tests.integration.test_pipeline_rabbitmq import (  # noqa: F401 (fixtures)
    _serve,
    _settings,
    aws_env,
    broker_url,
    s3_url,
    worker,
    worker_env,
    worker_log,
)
from tests.support.csv_files import HEADER, csv_bytes
from tests.support.databases import empty_tables_sql
from tests.support.image_server import ImageServer
from tests.support.redis_server import delete_prefix, require_redis
from tests.support.settings import pipeline_settings
from tests.support.waiting import eventually
from tests.support.worker_process import wait_for_children

from stockroom.app import create_app
from stockroom.config import Settings
from stockroom.domain import imports
from stockroom.domain.csv_import import read_import
from stockroom.domain.models import JobStatus, User
from stockroom.services import Services

MAX_BYTES = 64 * 1024
FINAL = {"completed", "completed_with_errors", "failed"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Batches of 3 rows, so a few rows make several batches; a quick completion sweep."""
    return pipeline_settings(
        database_url,
        tmp_path / "media",
        job_max_retries=2,
        import_batch_rows=3,
        import_sweep_seconds=0.05,
        import_max_bytes=MAX_BYTES,
        import_max_rows=2000,
    )


async def post_import(
    client: httpx.AsyncClient,
    who: Account,
    data: bytes,
    *,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    return await client.post(
        "/imports",
        files={"file": ("catalogue.csv", data, "text/csv")},
        data=fields,
        headers={**who.headers, **(headers or {})},
    )


async def settled_import(
    client: httpx.AsyncClient, import_id: str, who: Account, timeout: float = 30.0
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        response = await client.get(f"/imports/{import_id}", headers=who.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["status"] in FINAL else None

    result: dict[str, Any] = await eventually(check, timeout=timeout)
    return result


async def imported(
    client: httpx.AsyncClient, who: Account, records: list[list[str]]
) -> dict[str, Any]:
    """POST the records (the header first), then the import once it is finished."""
    accepted = await post_import(client, who, csv_bytes(records))
    assert accepted.status_code == 202, accepted.text
    return await settled_import(client, accepted.json()["request_id"], who)


async def output(client: httpx.AsyncClient, import_id: str, who: Account) -> list[list[str]]:
    response = await client.get(f"/imports/{import_id}/output.csv", headers=who.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(response.text)))


async def by_sku(client: httpx.AsyncClient, who: Account) -> dict[str, dict[str, Any]]:
    listed = await client.get("/products?limit=100", headers=who.headers)
    return {product["sku"]: product for product in listed.json()["items"]}


async def test_rows_become_products_and_output_keeps_each_url_in_its_position(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    jpg, png, missing = images.url("image.jpg"), images.url("image.png"), images.url("status/404")
    records = [
        list(HEADER),
        ["A-1", "Desk lamp", f"{jpg}, {missing}, {png}", "19.99", 'Brass, "warm"\nlight'],
        ["A-2", "Chair", "", "", ""],
        ["A-3", "Table", missing, "5", ""],
        ["A-4", "Shelf", png, "7.5", "Oak"],
    ]
    accepted = await post_import(client, alice, csv_bytes(records, bom=True))

    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "pending"
    assert accepted.headers["location"] == body["status_url"] == f"/imports/{body['request_id']}"
    done = await settled_import(client, body["request_id"], alice)
    assert done["status"] == "completed_with_errors"
    assert (done["rows"], done["images_total"]) == (4, 5)
    assert (done["images_done"], done["images_failed"]) == (3, 2)
    assert done["output_url"] == f"/imports/{body['request_id']}/output.csv"
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]

    products = await by_sku(client, alice)
    assert sorted(products) == ["A-1", "A-2", "A-3", "A-4"]
    lamp = products["A-1"]
    assert lamp["product_name"] == "Desk lamp"
    assert lamp["product_price"] == 19.99
    assert lamp["product_description"] == 'Brass, "warm"\nlight'
    assert lamp["product_images"] == [jpg, missing, png]
    assert products["A-2"]["product_price"] == 0.0  # no price given: 0 for a new product
    assert products["A-2"]["product_description"] is None

    rows = await output(client, body["request_id"], alice)
    assert rows[0] == [*HEADER, "Output Image URLs"]
    assert [row[:5] for row in rows[1:]] == records[1:]
    outputs = [row[5].split(",") for row in rows[1:]]
    assert outputs[0][0] == lamp["compressed_product_images"][0]
    assert outputs[0][1] == ""  # the 404: its position kept, empty
    assert outputs[0][2] == lamp["compressed_product_images"][2]
    assert outputs[1] == [""]  # no images
    assert outputs[2] == [""]  # its one image failed
    assert outputs[3][0].startswith("http://testserver/media/img/")


async def test_a_reimport_updates_by_sku_and_urls_that_stay_keep_their_results(
    client: httpx.AsyncClient, alice: Account, images: ImageServer, services: Services
) -> None:
    jpg, png = images.url("image.jpg"), images.url("photo/1.jpg")
    header = ["Serial Number", "Product Name", "Input Image URLs", "Description"]
    first = await imported(
        client,
        alice,
        [
            header,
            ["S-1", "Lamp", jpg, "Old"],
            ["S-2", "Chair", png, "Wood"],
            ["S-3", "Desk", "", "Pine"],
        ],
    )
    assert first["status"] == "completed"
    before = await by_sku(client, alice)
    jobs_before = await _product_jobs(services, alice.id)

    # Price column absent: prices stay. S-1 gains a URL before its kept one; S-2 unchanged;
    # S-3 loses its description; S-4 is new.
    second = await imported(
        client,
        alice,
        [
            ["serial number ", " PRODUCT NAME", "input image urls", "description"],
            ["S-1", "Lamp v2", f"{png},{jpg}", "New"],
            ["S-2", "Chair", png, "Wood"],
            ["S-3", "Desk", "", ""],
            ["S-4", "Stool", jpg, "Metal"],
        ],
    )

    assert second["status"] == "completed", second
    assert (second["images_total"], second["images_done"]) == (4, 4)
    after = await by_sku(client, alice)
    assert sorted(after) == ["S-1", "S-2", "S-3", "S-4"]
    assert {sku: after[sku]["id"] for sku in before} == {sku: before[sku]["id"] for sku in before}
    lamp = after["S-1"]
    assert (lamp["product_name"], lamp["product_description"]) == ("Lamp v2", "New")
    assert lamp["product_images"] == [png, jpg]
    assert lamp["compressed_product_images"][1] == before["S-1"]["compressed_product_images"][0]
    assert after["S-2"] == before["S-2"]  # nothing changed, not even updated_at
    assert after["S-3"]["product_description"] is None
    jobs_after = await _product_jobs(services, alice.id)
    # Only the new URLs were processed: S-1's new first image and S-4's.
    assert len(jobs_after) - len(jobs_before) == 2
    rows = await output(client, second["request_id"], alice)
    assert rows[1][4].split(",") == lamp["compressed_product_images"]
    assert rows[2][4] == after["S-2"]["compressed_product_images"][0]


async def _product_jobs(services: Services, user_id: int) -> list[Any]:
    async with services.uow() as uow:
        return await uow.image_jobs.search(user_id=user_id, limit=1000)


async def test_a_file_with_bad_rows_lists_every_problem_and_imports_nothing(
    client: httpx.AsyncClient, alice: Account
) -> None:
    records = [
        list(HEADER),
        ["B-1", "Good", "", "1", ""],
        ["", "No sku", "", "1", ""],
        ["B-3", "Bad price", "ftp://example.com/a.jpg", "1.234", ""],
        ["B-1", "Repeated sku", "", "", ""],
    ]
    response = await post_import(client, alice, csv_bytes(records))

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "https://stockroom.dev/problems/invalid_csv"
    assert body["total"] == 4
    assert [(e["row"], e["column"]) for e in body["errors"]] == [
        (3, "Serial Number"),
        (4, "Input Image URLs"),
        (4, "Price"),
        (5, "Serial Number"),
    ]
    assert all(e["message"] for e in body["errors"])
    assert (await by_sku(client, alice)) == {}
    assert (await client.get("/imports", headers=alice.headers)).json()["items"] == []


async def test_over_a_thousand_problems_lists_the_first_thousand_and_the_total(
    client: httpx.AsyncClient, alice: Account
) -> None:
    records = [list(HEADER)] + [[f"C-{n}", "Name", "", "free", ""] for n in range(1200)]

    response = await post_import(client, alice, csv_bytes(records))

    assert response.status_code == 422
    body = response.json()
    assert len(body["errors"]) == 1000
    assert body["total"] == 1200
    assert (body["errors"][0]["row"], body["errors"][0]["column"]) == (2, "Price")


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_file_over_the_limit_is_refused_while_it_streams(
    client: httpx.AsyncClient, alice: Account, streamed: bool
) -> None:
    rows = [list(HEADER)] + [[f"D-{n}", "x" * 200, "", "", ""] for n in range(800)]
    data = csv_bytes(rows)
    assert len(data) > MAX_BYTES + 64 * 1024
    request = client.build_request(
        "POST",
        "/imports",
        files={"file": ("big.csv", data, "text/csv")},
        headers=alice.headers,
    )
    if streamed:  # no Content-Length: the body is counted as it arrives
        body = request.read()

        async def chunks() -> Any:
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        request = client.build_request(
            "POST",
            "/imports",
            content=chunks(),
            headers={**alice.headers, "content-type": request.headers["content-type"]},
        )

    response = await client.send(request)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert (await by_sku(client, alice)) == {}


async def test_a_file_just_over_the_limit_within_the_form_slack_is_refused(
    client: httpx.AsyncClient, alice: Account
) -> None:
    rows = [list(HEADER)] + [[f"E-{n}", "y" * 100, "", "", ""] for n in range(1000)]
    data = csv_bytes(rows)[: MAX_BYTES + 10]

    response = await post_import(client, alice, data)

    assert response.status_code == 413
    assert response.json()["type"] == "https://stockroom.dev/problems/too_large"


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (bytes(range(256)) * 8, 422),  # binary: not UTF-8
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, 422),
        (b"", 422),
    ],
    ids=["binary", "png", "empty"],
)
async def test_what_is_not_a_csv_file_is_refused(
    client: httpx.AsyncClient, alice: Account, content: bytes, status: int
) -> None:
    response = await post_import(client, alice, content)

    assert response.status_code == status, response.text
    assert response.json()["errors"]


async def test_the_form_must_be_multipart_with_a_file_and_a_valid_callback(
    client: httpx.AsyncClient, alice: Account
) -> None:
    as_json = await client.post("/imports", json={"file": "x"}, headers=alice.headers)
    hook = {"callback_url": (None, "")}  # a form, but no file in it
    no_file = await client.post("/imports", files=hook, headers=alice.headers)
    bad_callback = await post_import(
        client, alice, csv_bytes([HEADER, ["F-1", "x", "", "", ""]]), callback_url="nope"
    )

    assert as_json.status_code == 415
    assert no_file.status_code == 422
    assert no_file.json()["errors"] == [{"field": "file", "message": "a CSV file is required"}]
    assert bad_callback.status_code == 422
    assert bad_callback.json()["errors"][0]["field"] == "callback_url"


async def test_two_imports_of_one_user_at_once_both_finish(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    first = [list(HEADER)] + [
        [f"G-{n}", f"First {n}", images.url(f"photo/{n}.jpg"), "1", ""] for n in range(8)
    ]
    # Disjoint skus but one, with the same image: whichever writes it first, it exists once
    # and its image is processed once, for both.
    second = [list(HEADER)] + [
        [f"H-{n}", f"Second {n}", images.url(f"photo/{100 + n}.jpg"), "2", ""] for n in range(8)
    ]
    second.append(["G-0", "Shared", images.url("photo/0.jpg"), "3", ""])

    answers = await asyncio.gather(
        post_import(client, alice, csv_bytes(first)), post_import(client, alice, csv_bytes(second))
    )

    assert [a.status_code for a in answers] == [202, 202]
    ids = [a.json()["request_id"] for a in answers]
    assert ids[0] != ids[1]
    done = [await settled_import(client, import_id, alice) for import_id in ids]
    assert [d["status"] for d in done] == ["completed", "completed"]
    assert [d["images_done"] for d in done] == [8, 9]
    products = await by_sku(client, alice)
    assert len(products) == 16
    listed = (await client.get("/imports", headers=alice.headers)).json()
    assert {item["request_id"] for item in listed["items"]} == set(ids)


async def test_an_import_is_its_owners_alone(
    client: httpx.AsyncClient, alice: Account, bob: Account, admin: Account
) -> None:
    done = await imported(client, alice, [list(HEADER), ["K-1", "Lamp", "", "1", ""]])
    path = f"/imports/{done['request_id']}"

    assert (await client.get(path, headers=bob.headers)).status_code == 404
    assert (await client.get(f"{path}/output.csv", headers=bob.headers)).status_code == 404
    assert (await client.get(path, headers=bob.headers)).json()["type"].endswith("import_not_found")
    assert (await client.get("/imports", headers=bob.headers)).json()["items"] == []
    assert (await client.get(path, headers=admin.headers)).status_code == 200
    missing = await client.get(f"/imports/{'0' * 32}", headers=alice.headers)
    assert missing.status_code == 404


async def test_a_retried_post_with_its_idempotency_key_imports_once(
    client: httpx.AsyncClient, alice: Account
) -> None:
    data = csv_bytes([HEADER, ["L-1", "Lamp", "", "1", ""]])
    key = {"Idempotency-Key": "import-1"}

    first = await post_import(client, alice, data, headers=key)
    again = await post_import(client, alice, data, headers=key)
    other = await post_import(client, alice, data + b"L-2,Chair,,,\r\n", headers=key)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    listed = (await client.get("/imports", headers=alice.headers)).json()
    assert len(listed["items"]) == 1


async def test_an_output_file_imported_again_fills_its_output_column_again(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    first = await imported(
        client, alice, [list(HEADER), ["M-1", "Lamp", images.url("image.jpg"), "1", ""]]
    )
    exported = await client.get(f"/imports/{first['request_id']}/output.csv", headers=alice.headers)

    again = await post_import(client, alice, exported.content)
    done = await settled_import(client, again.json()["request_id"], alice)
    rows = await output(client, done["request_id"], alice)

    assert rows[0] == [*HEADER, "Output Image URLs"]
    assert rows[1] == list(csv.reader(io.StringIO(exported.text)))[1]


async def test_an_import_accepted_before_a_crash_finishes_after_a_restart(
    settings: Settings, images: ImageServer
) -> None:
    """The API died after its 202: the batches' messages, published to the in-memory queue,
    died with it. Started again, the process queues them again from the database."""
    records = [list(HEADER)] + [
        [f"N-{n}", f"Item {n}", images.url(f"photo/{n}.jpg"), "1", ""] for n in range(7)
    ]
    parsed = read_import([csv_bytes(records)])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        await _empty(services)
        alice = await make_account(services, "crash@example.com")
        owner = await _user(services, alice.id)
        assert services.relay is not None
        await services.relay.stop()  # nothing leaves the outbox before the "crash"
        accepted = await imports.accept_import(
            services.uow(), owner, parsed, per_batch=3, render=lambda found: found.id.encode()
        )
        import_id = accepted.response.body.decode()
        async with services.uow() as uow:  # as if the relay had published them
            messages = await uow.outbox.claim(100)
            await uow.outbox.mark_published([m.id for m in messages])
            await uow.commit()

    restarted = create_app(settings)
    async with restarted.router.lifespan_context(restarted):
        transport = httpx.ASGITransport(app=restarted)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            done = await settled_import(client, import_id, alice)
            products = await by_sku(client, alice)

    assert done["status"] == "completed", done
    assert (done["rows"], done["images_done"]) == (7, 7)
    assert sorted(products) == [f"N-{n}" for n in range(7)]


async def _empty(services: Services) -> None:
    async with services.engine.begin() as connection:
        for statement in empty_tables_sql(connection.dialect.name):
            await connection.execute(text(statement))


async def _user(services: Services, user_id: int) -> User:
    async with services.uow() as uow:
        found = await uow.users.get(user_id)
    assert found is not None
    return found


# -- the production shape: RabbitMQ and `stockroom worker` processes ---------------------------


@pytest.fixture
async def import_api(
    worker_env: dict[str, str],  # noqa: F811
    worker: int,  # noqa: F811
    tmp_path: Path,
    aws_env: None,  # noqa: F811
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """test_pipeline_rabbitmq's `api`, with batches of 10 rows."""
    async for pair in _serve(_settings(worker_env, tmp_path, import_batch_rows=10)):
        await _empty(pair[0].state.services)
        redis = require_redis()
        try:
            await delete_prefix(redis, worker_env["STOCKROOM_CACHE_KEY_PREFIX"])
        finally:
            await redis.aclose()
        yield pair


@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.xdist_group("rabbitmq")
async def test_sigkill_of_a_worker_mid_import_still_imports_every_row_once(
    import_api: tuple[FastAPI, httpx.AsyncClient],
    images: ImageServer,
    worker: int,  # noqa: F811
) -> None:
    app, client = import_api
    services: Services = app.state.services
    alice = await make_account(services, "import-bulk@example.com")
    records = [list(HEADER)] + [
        [f"R-{n}", f"Row {n}", images.url(f"photo/{2000 + n}.jpg"), "1", ""] for n in range(120)
    ]
    accepted = await post_import(client, alice, csv_bytes(records))
    assert accepted.status_code == 202, accepted.text
    import_id = accepted.json()["request_id"]

    async def some_images_done() -> bool:
        body = (await client.get(f"/imports/{import_id}", headers=alice.headers)).json()
        return bool(body["images_done"] >= 10)

    await eventually(some_images_done, timeout=60)
    victim = wait_for_children(worker, 2)[0]
    os.kill(victim, signal.SIGKILL)

    done = await settled_import(client, import_id, alice, timeout=120)
    assert done["status"] == "completed", done
    assert (done["rows"], done["images_done"], done["images_failed"]) == (120, 120, 0)
    async with services.uow() as uow:
        jobs = await uow.image_jobs.search(user_id=alice.id, limit=500)
    assert len(jobs) == 120  # one job per row: no batch was written twice
    assert {job.status for job in jobs} == {JobStatus.SUCCEEDED}
    rows = await output(client, import_id, alice)
    assert [row[0] for row in rows[1:]] == [f"R-{n}" for n in range(120)]
    assert all(row[5] for row in rows[1:])
    assert victim not in wait_for_children(worker, 2)

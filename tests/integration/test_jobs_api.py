"""Standalone image jobs by URL (POST /jobs, its aliases, GET /jobs), through the embedded
pipeline on SQLite and PostgreSQL, with images served by a local HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
from tests.conftest import Account
from tests.support.image_server import ImageServer
from tests.support.settings import pipeline_settings
from tests.support.waiting import settled_job, settled_lamp

from stockroom.config import Settings
from stockroom.domain.errors import SourceClientError


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Private addresses allowed (the image server is on loopback); quick retries."""
    return pipeline_settings(database_url, tmp_path / "media", job_max_retries=1)


async def submit(
    client: httpx.AsyncClient, who: Account, path: str = "/jobs", **body: Any
) -> httpx.Response:
    return await client.post(path, json=body, headers=who.headers)


def stored(tmp_path: Path, output_url: str) -> pyvips.Image:
    """The output file behind a /media URL of the test app's file storage."""
    return pyvips.Image.new_from_file(str(tmp_path / "media" / output_url.split("/media/")[1]))


async def test_a_job_by_url_runs_its_operations_in_order(
    client: httpx.AsyncClient, alice: Account, images: ImageServer, tmp_path: Path
) -> None:
    operations = [
        {"op": "rotate", "degrees": 90},
        {"op": "resize", "width": 24, "height": 24},
        {"op": "convert", "format": "webp"},
    ]
    accepted = await submit(client, alice, image_url=images.url("image.jpg"), operations=operations)

    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status"] == "queued"
    assert body["status_url"] == f"/jobs/{body['id']}"
    assert accepted.headers["location"] == body["status_url"]
    job = await settled_job(client, body["id"], alice.headers)
    assert job["status"] == "succeeded", job
    assert job["operations"] == operations
    assert job["source_url"] == images.url("image.jpg")
    assert job["attempts"] == 1
    assert (job["width"], job["height"]) == (18, 24)  # 64x48 turned upright, fit in 24x24
    assert job["output_url"].endswith(".webp")
    assert job["bytes_in"] > 0
    assert job["bytes_out"] > 0
    assert job["started_at"] <= job["finished_at"]
    output = stored(tmp_path, job["output_url"])
    assert (output.width, output.height) == (18, 24)
    assert output.get("vips-loader").startswith("webp")


async def test_no_operations_is_the_default_product_pipeline(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    accepted = await submit(client, alice, image_url=images.url("image.png"))

    job = await settled_job(client, accepted.json()["id"], alice.headers)

    assert job["status"] == "succeeded"
    assert job["operations"] == []
    assert job["output_url"].endswith(".png")  # transparent: PNG, not JPEG


async def test_operations_may_be_the_text_form_in_json_too(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    accepted = await submit(
        client, alice, image_url=images.url("image.jpg"), operations="resize,16x16;compress,30"
    )

    job = await settled_job(client, accepted.json()["id"], alice.headers)
    assert job["operations"] == [
        {"op": "resize", "width": 16, "height": 16},
        {"op": "compress", "quality": 30},
    ]
    assert job["status"] == "succeeded"


async def test_the_aliases_answer_as_their_routes(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    accepted = await submit(client, alice, "/process-image", image_url=images.url("image.jpg"))
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    await settled_job(client, job_id, alice.headers)

    route = await client.get(f"/jobs/{job_id}", headers=alice.headers)
    alias = await client.get(f"/status/{job_id}", headers=alice.headers)

    assert alias.status_code == route.status_code == 200
    assert alias.content == route.content


@pytest.mark.parametrize(
    ("operations", "field"),
    [
        ([{"op": "rotate", "degrees": 90}, {"op": "resize", "width": 0, "height": 5}], "[1]"),
        ([{"op": "blur"}], "[0]"),
        ([{"op": "convert", "format": "gif"}], "[0]"),
        ([{"op": "compress", "quality": 101}], "[0]"),
        ([{"op": "resize", "width": 10}], "[0]"),
        ([{"op": "rotate", "degrees": 90, "extra": 1}], "[0]"),
    ],
)
async def test_an_invalid_operation_is_422_naming_its_position(
    client: httpx.AsyncClient, alice: Account, operations: list[Any], field: str
) -> None:
    response = await submit(
        client, alice, image_url="https://img.example.com/a.jpg", operations=operations
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in response.json()["errors"]] == [f"operations{field}"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"image_url": "ftp://img.example.com/a.jpg"},
        {"image_url": "not a url"},
        {"image_url": "https://img.example.com/a.jpg", "operations": "spin,90"},
        {"image_url": "https://img.example.com/a.jpg", "surprise": True},
        {"image_url": "https://img.example.com/a.jpg", "callback_url": "file:///etc/passwd"},
    ],
)
async def test_a_bad_body_is_422_and_queues_nothing(
    client: httpx.AsyncClient, alice: Account, body: dict[str, Any]
) -> None:
    response = await client.post("/jobs", json=body, headers=alice.headers)
    listed = await client.get("/jobs", headers=alice.headers)

    assert response.status_code == 422
    assert listed.json()["items"] == []


async def test_jobs_are_their_owners_alone_and_an_admin_sees_all(
    client: httpx.AsyncClient, alice: Account, bob: Account, admin: Account, images: ImageServer
) -> None:
    job_id = (await submit(client, alice, image_url=images.url("image.jpg"))).json()["id"]
    await settled_job(client, job_id, alice.headers)

    theirs = await client.get(f"/jobs/{job_id}", headers=bob.headers)
    alias = await client.get(f"/status/{job_id}", headers=bob.headers)
    bobs_list = await client.get("/jobs", headers=bob.headers)
    as_admin = await client.get(f"/jobs/{job_id}", headers=admin.headers)
    admin_list = await client.get("/jobs", headers=admin.headers)

    assert theirs.status_code == alias.status_code == 404
    assert bobs_list.json()["items"] == []
    assert as_admin.status_code == 200
    assert [job["id"] for job in admin_list.json()["items"]] == [job_id]


async def test_a_product_images_job_is_not_a_job_of_this_resource(
    client: httpx.AsyncClient, alice: Account, admin: Account, images: ImageServer
) -> None:
    await settled_lamp(client, alice.headers, [images.url("status/404")])
    (letter,) = (await client.get("/admin/dead-letters", headers=admin.headers)).json()["items"]

    as_job = await client.get(f"/jobs/{letter['id']}", headers=alice.headers)
    listed = await client.get("/jobs", headers=alice.headers)

    assert letter["kind"] == "product_image"
    assert as_job.status_code == 404
    assert listed.json()["items"] == []


async def test_list_filters_by_status_and_pages_with_a_cursor(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    good = [(await submit(client, alice, image_url=images.url("image.jpg"))).json()["id"]]
    good.append((await submit(client, alice, image_url=images.url("image.png"))).json()["id"])
    bad = (await submit(client, alice, image_url=images.url("status/404"))).json()["id"]
    for job_id in [*good, bad]:
        await settled_job(client, job_id, alice.headers)

    failed = (await client.get("/jobs?status=failed", headers=alice.headers)).json()
    first = (await client.get("/jobs?status=succeeded&limit=1", headers=alice.headers)).json()
    second = (
        await client.get(
            f"/jobs?status=succeeded&limit=1&cursor={first['next_cursor']}", headers=alice.headers
        )
    ).json()
    refused = await client.get("/jobs?status=done", headers=alice.headers)

    assert [job["id"] for job in failed["items"]] == [bad]
    assert [job["id"] for job in first["items"] + second["items"]] == good[::-1]  # newest first
    assert second["next_cursor"] is None
    assert refused.status_code == 422


async def test_a_failed_job_says_why_and_can_be_redriven(
    client: httpx.AsyncClient, alice: Account, admin: Account, images: ImageServer
) -> None:
    job_id = (await submit(client, alice, image_url=images.url("status/404"))).json()["id"]

    job = await settled_job(client, job_id, alice.headers)
    letters = (await client.get("/admin/dead-letters", headers=admin.headers)).json()
    redriven = await client.post(f"/admin/dead-letters/{job_id}/retry", headers=admin.headers)
    again = await settled_job(client, job_id, alice.headers)

    assert job["status"] == "failed"
    assert job["error_code"] == "http_4xx"
    assert job["error"] == SourceClientError.title
    assert job["output_url"] is None
    assert [letter["id"] for letter in letters["items"]] == [job_id]
    assert redriven.status_code == 202
    assert again["status"] == "failed"  # through the jobs' queue again, to the same 404
    assert again["attempts"] == 1


async def test_idempotency_key_replays_the_first_answer(
    client: httpx.AsyncClient, alice: Account, images: ImageServer
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "job-1"}
    body = {"image_url": images.url("image.jpg"), "operations": [{"op": "rotate", "degrees": 180}]}
    first = await client.post("/jobs", json=body, headers=headers)
    again = await client.post("/jobs", json=body, headers=headers)
    other = await client.post("/jobs", json={**body, "operations": []}, headers=headers)
    listed = (await client.get("/jobs", headers=alice.headers)).json()

    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert [job["id"] for job in listed["items"]] == [first.json()["id"]]


@pytest.mark.parametrize("path", ["/jobs/xyz", "/jobs/" + "0" * 32, "/status/" + "f" * 32])
async def test_an_unknown_or_malformed_job_id_is_404_or_422(
    client: httpx.AsyncClient, alice: Account, path: str
) -> None:
    response = await client.get(path, headers=alice.headers)

    assert response.status_code in (404, 422)
    assert response.headers["content-type"] == "application/problem+json"

"""Jobs on uploaded files: multipart (`POST /jobs/upload`, `/upload`) and direct uploads
(`POST /jobs/upload-url`, the client's PUT, `POST /jobs/{id}/start`), through the embedded
pipeline on SQLite and PostgreSQL, with file storage and with S3 (moto_server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
from fastapi import FastAPI
from tests.conftest import Account
from tests.support.images import photo_bytes
from tests.support.moto import MOTO_CREDENTIALS, running_moto_server
from tests.support.settings import pipeline_settings
from tests.support.waiting import settled_job

from stockroom.adapters.storage import S3ImageStore
from stockroom.config import Settings
from stockroom.domain import jobs
from stockroom.services import Services

MAX_BYTES = 200_000
JPEG = photo_bytes(64, 48, "jpeg")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return pipeline_settings(
        database_url,
        tmp_path / "media",
        job_max_retries=1,
        max_image_bytes=MAX_BYTES,
        upload_expiry_sweep_seconds=0.2,
    )


async def upload(
    client: httpx.AsyncClient,
    who: Account,
    data: bytes = JPEG,
    *,
    path: str = "/jobs/upload",
    headers: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    return await client.post(
        path,
        files={"file": ("photo.jpg", data, "image/jpeg")},
        data={**(form or {}), **fields},
        headers={**who.headers, **(headers or {})},
    )


def stored(tmp_path: Path, output_url: str) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(tmp_path / "media" / output_url.split("/media/")[1]))


# -- multipart ------------------------------------------------------------------------------


async def test_an_upload_runs_its_text_operations(
    client: httpx.AsyncClient, alice: Account, tmp_path: Path
) -> None:
    accepted = await upload(client, alice, operations="rotate,90;resize,24x24;convert,webp")

    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "queued"
    assert accepted.headers["location"] == body["status_url"] == f"/jobs/{body['id']}"
    job = await settled_job(client, body["id"], alice.headers)
    assert job["status"] == "succeeded", job
    assert job["source_url"] is None
    assert job["operations"] == [
        {"op": "rotate", "degrees": 90},
        {"op": "resize", "width": 24, "height": 24},
        {"op": "convert", "format": "webp"},
    ]
    assert job["bytes_in"] == len(JPEG)
    output = stored(tmp_path, job["output_url"])
    assert (output.width, output.height) == (18, 24)
    assert output.get("vips-loader").startswith("webp")


async def test_the_upload_alias_answers_as_its_route(
    client: httpx.AsyncClient, alice: Account
) -> None:
    first = await upload(client, alice, path="/upload", operations="compress,40")
    second = await upload(client, alice, operations="compress,40")

    assert first.status_code == second.status_code == 202
    assert first.json().keys() == second.json().keys()
    for accepted in (first, second):
        job = await settled_job(client, accepted.json()["id"], alice.headers)
        assert job["status"] == "succeeded"
    assert (await client.get(f"/status/{first.json()['id']}", headers=alice.headers)).json()[
        "operations"
    ] == [{"op": "compress", "quality": 40}]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_file_over_the_limit_is_refused_while_it_streams(
    client: httpx.AsyncClient, alice: Account, streamed: bool
) -> None:
    big = JPEG + b"\0" * (MAX_BYTES + 100_000)
    request = client.build_request(
        "POST",
        "/jobs/upload",
        files={"file": ("big.jpg", big, "image/jpeg")},
        headers=alice.headers,
    )
    if streamed:  # no Content-Length: the body is counted as it arrives
        body = request.read()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        request = client.build_request(
            "POST",
            "/jobs/upload",
            content=chunks(),
            headers={**alice.headers, "content-type": request.headers["content-type"]},
        )
    response = await client.send(request)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/jobs", headers=alice.headers)).json()["items"] == []


async def test_a_file_just_over_the_limit_inside_the_form_slack_is_413(
    client: httpx.AsyncClient, alice: Account
) -> None:
    response = await upload(client, alice, JPEG + b"\0" * (MAX_BYTES - len(JPEG) + 1))

    assert response.status_code == 413


@pytest.mark.parametrize(
    "data",
    [b"hello, this is text", b"%PDF-1.7\n...", b"<svg xmlns='http://www.w3.org/2000/svg'/>"],
    ids=["text", "pdf", "svg"],
)
async def test_what_is_not_an_image_is_415_whatever_its_name_and_type(
    client: httpx.AsyncClient, alice: Account, data: bytes
) -> None:
    response = await upload(client, alice, data)

    assert response.status_code == 415, response.text
    assert (await client.get("/jobs", headers=alice.headers)).json()["items"] == []


async def test_a_file_that_only_starts_like_an_image_fails_its_job(
    client: httpx.AsyncClient, alice: Account
) -> None:
    accepted = await upload(client, alice, b"\xff\xd8\xff\xe0" + b"not a jpeg" * 100)

    job = await settled_job(client, accepted.json()["id"], alice.headers)
    assert job["status"] == "failed"
    assert job["error_code"] in ("not_an_image", "decode_error")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"operations": "rotate,90;resize,0x10"}, "operations[1]"),
        ({"operations": "spin,3"}, "operations[0]"),
        ({"callback_url": "ftp://example.com/hook"}, "callback_url"),
    ],
)
async def test_invalid_form_fields_are_422_naming_them(
    client: httpx.AsyncClient, alice: Account, fields: dict[str, str], field: str
) -> None:
    response = await upload(client, alice, form=fields)

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]


async def test_empty_form_fields_are_absent_ones(client: httpx.AsyncClient, alice: Account) -> None:
    """A form sends its empty fields: an empty `callback_url` is no callback (none may be
    given here, with no webhook secret set), an empty `operations` the default pipeline."""
    accepted = await upload(client, alice, form={"operations": "", "callback_url": ""})

    assert accepted.status_code == 202, accepted.text
    job = await settled_job(client, accepted.json()["id"], alice.headers)
    assert (job["status"], job["operations"]) == ("succeeded", [])


@pytest.mark.parametrize(
    "files",
    [
        {"operations": (None, "compress,50")},  # multipart, but no file at all
        {"picture": ("a.jpg", JPEG, "image/jpeg")},  # a file under another name
    ],
    ids=["no-file", "other-name"],
)
async def test_a_form_without_its_file_is_422(
    client: httpx.AsyncClient, alice: Account, files: dict[str, Any]
) -> None:
    response = await client.post("/jobs/upload", files=files, headers=alice.headers)

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "file"


async def test_a_json_body_is_415(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post("/jobs/upload", json={"file": "x"}, headers=alice.headers)

    assert response.status_code == 415


async def test_a_retried_upload_with_its_key_answers_the_first_job(
    client: httpx.AsyncClient, alice: Account
) -> None:
    key = {"Idempotency-Key": "upload-1"}
    first = await upload(client, alice, headers=key, operations="compress,30")
    again = await upload(client, alice, headers=key, operations="compress,30")
    other = await upload(client, alice, photo_bytes(32, 32, seed=3), headers=key)

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert len((await client.get("/jobs", headers=alice.headers)).json()["items"]) == 1


async def test_uploaded_sources_are_not_served_as_media(
    client: httpx.AsyncClient, alice: Account, tmp_path: Path
) -> None:
    accepted = await upload(client, alice)
    await settled_job(client, accepted.json()["id"], alice.headers)
    (uploaded,) = (tmp_path / "media" / "uploads").iterdir()

    response = await client.get(f"/media/uploads/{uploaded.name}")

    assert response.status_code == 404


# -- direct upload, file storage ------------------------------------------------------------


async def upload_url(client: httpx.AsyncClient, who: Account, **body: Any) -> httpx.Response:
    values = {"content_type": "image/jpeg", "bytes": len(JPEG), **body}
    return await client.post("/jobs/upload-url", json=values, headers=who.headers)


async def test_a_direct_upload_puts_then_starts(
    client: httpx.AsyncClient, alice: Account, tmp_path: Path
) -> None:
    created = await upload_url(client, alice, operations="resize,32x32")
    assert created.status_code == 201, created.text
    grant = created.json()
    job_id = grant["job_id"]
    assert created.headers["location"] == f"/jobs/{job_id}"
    assert grant["method"] == "PUT"
    assert grant["headers"] == {"Content-Type": "image/jpeg"}
    assert grant["upload_url"].startswith(f"http://testserver/uploads/{job_id}?token=")
    waiting = (await client.get(f"/jobs/{job_id}", headers=alice.headers)).json()
    assert waiting["status"] == "uploading"

    put = await client.put(grant["upload_url"], content=JPEG, headers=grant["headers"])
    assert put.status_code == 200, put.text
    started = await client.post(f"/jobs/{job_id}/start", headers=alice.headers)

    assert started.status_code == 202, started.text
    assert started.json()["id"] == job_id
    job = await settled_job(client, job_id, alice.headers)
    assert job["status"] == "succeeded", job
    assert (job["width"], job["height"]) == (32, 24)
    assert job["bytes_in"] == len(JPEG)
    again = await client.post(f"/jobs/{job_id}/start", headers=alice.headers)
    assert again.status_code == 202
    assert again.json()["status"] == "succeeded"
    late = await client.put(grant["upload_url"], content=JPEG, headers=grant["headers"])
    assert late.status_code == 403


async def test_the_upload_url_wants_its_token_and_its_type(
    client: httpx.AsyncClient, alice: Account
) -> None:
    grant = (await upload_url(client, alice)).json()
    forged = grant["upload_url"].split("?token=")[0] + "?token=forged"

    assert (await client.put(forged, content=JPEG, headers=grant["headers"])).status_code == 403
    wrong_type = await client.put(
        grant["upload_url"], content=JPEG, headers={"Content-Type": "image/png"}
    )
    assert wrong_type.status_code == 415
    too_big = await client.put(
        grant["upload_url"], content=b"\0" * (MAX_BYTES + 1), headers=grant["headers"]
    )
    assert too_big.status_code == 413


async def test_starting_before_the_put_is_409_and_changes_nothing(
    client: httpx.AsyncClient, alice: Account
) -> None:
    job_id = (await upload_url(client, alice)).json()["job_id"]

    response = await client.post(f"/jobs/{job_id}/start", headers=alice.headers)

    assert response.status_code == 409
    assert response.json()["type"].endswith("/upload_missing")
    job = (await client.get(f"/jobs/{job_id}", headers=alice.headers)).json()
    assert job["status"] == "uploading"


async def test_what_cannot_be_told_at_submission_fails_as_not_an_image(
    client: httpx.AsyncClient, alice: Account
) -> None:
    grant = (await upload_url(client, alice)).json()
    await client.put(grant["upload_url"], content=b"plain text " * 10, headers=grant["headers"])
    await client.post(f"/jobs/{grant['job_id']}/start", headers=alice.headers)

    job = await settled_job(client, grant["job_id"], alice.headers)

    assert job["status"] == "failed"
    assert job["error_code"] == "not_an_image"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"content_type": "text/plain"}, 415),
        ({"bytes": MAX_BYTES + 1}, 413),
        ({"bytes": 0}, 422),
        ({"bytes": True}, 422),
        ({"bytes": "12"}, 422),
        ({"operations": [{"op": "rotate", "degrees": "x"}]}, 422),
    ],
)
async def test_an_upload_url_is_refused_when_its_file_cannot_pass(
    client: httpx.AsyncClient, alice: Account, body: dict[str, Any], status: int
) -> None:
    response = await upload_url(client, alice, **body)

    assert response.status_code == status, response.text
    assert (await client.get("/jobs", headers=alice.headers)).json()["items"] == []


async def test_another_users_upload_is_not_found(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    job_id = (await upload_url(client, alice)).json()["job_id"]

    assert (await client.post(f"/jobs/{job_id}/start", headers=bob.headers)).status_code == 404
    assert (await client.get(f"/jobs/{job_id}", headers=bob.headers)).status_code == 404


async def test_a_retried_upload_url_request_with_its_key_answers_the_first_grant(
    client: httpx.AsyncClient, alice: Account
) -> None:
    key = {"Idempotency-Key": "grant-1"}
    body = {"content_type": "image/jpeg", "bytes": 1000}
    first = await client.post("/jobs/upload-url", json=body, headers={**alice.headers, **key})
    again = await client.post("/jobs/upload-url", json=body, headers={**alice.headers, **key})

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()


class TestExpiry:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return pipeline_settings(
            database_url,
            tmp_path / "media",
            upload_url_ttl_seconds=1,
            upload_expiry_sweep_seconds=0.2,
        )

    async def test_an_upload_never_started_fails_as_upload_expired(
        self, client: httpx.AsyncClient, alice: Account
    ) -> None:
        grant = (await upload_url(client, alice)).json()
        await client.put(grant["upload_url"], content=JPEG, headers=grant["headers"])

        job = await settled_job(client, grant["job_id"], alice.headers, timeout=10)

        assert job["status"] == "failed"
        assert job["error_code"] == "upload_expired"
        late_start = await client.post(f"/jobs/{grant['job_id']}/start", headers=alice.headers)
        assert late_start.status_code == 409
        assert late_start.json()["type"].endswith("/upload_expired")
        late_put = await client.put(grant["upload_url"], content=JPEG, headers=grant["headers"])
        assert late_put.status_code == 403


# -- direct upload, S3 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with running_moto_server() as endpoint:
        yield endpoint


class TestS3:
    @pytest.fixture
    def settings(
        self,
        database_url: str,
        tmp_path: Path,
        moto_endpoint: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> Settings:
        for name, value in MOTO_CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        bucket = f"test-{uuid.uuid4().hex}"
        return pipeline_settings(
            database_url,
            tmp_path / "media",
            storage_url=f"s3://{bucket}?endpoint_url={moto_endpoint}&region=us-east-1",
            max_image_bytes=MAX_BYTES,
        )

    @pytest.fixture
    async def bucket(self, app: FastAPI) -> None:
        store = app.state.services.store
        assert isinstance(store, S3ImageStore)
        await store.create_bucket_if_missing()

    @pytest.mark.usefixtures("bucket")
    async def test_a_direct_upload_puts_to_a_presigned_url(
        self, client: httpx.AsyncClient, alice: Account, moto_endpoint: str
    ) -> None:
        grant = (await upload_url(client, alice, operations="force_resize,20x20")).json()
        assert grant["upload_url"].startswith(moto_endpoint)
        assert "Signature=" in grant["upload_url"] or "X-Amz-Signature=" in grant["upload_url"]

        async with httpx.AsyncClient() as s3:
            put = await s3.put(grant["upload_url"], content=JPEG, headers=grant["headers"])
        assert put.status_code == 200, put.text
        started = await client.post(f"/jobs/{grant['job_id']}/start", headers=alice.headers)

        assert started.status_code == 202, started.text
        job = await settled_job(client, grant["job_id"], alice.headers)
        assert job["status"] == "succeeded", job
        assert (job["width"], job["height"]) == (20, 20)
        assert job["output_url"].startswith(moto_endpoint)

    @pytest.mark.usefixtures("bucket")
    async def test_a_multipart_upload_is_stored_in_the_bucket(
        self, client: httpx.AsyncClient, alice: Account
    ) -> None:
        accepted = await upload(client, alice, operations="convert,png")

        job = await settled_job(client, accepted.json()["id"], alice.headers)

        assert job["status"] == "succeeded", job
        assert job["output_url"].endswith(".png")

    @pytest.mark.usefixtures("bucket")
    async def test_starting_before_the_put_is_409(
        self, client: httpx.AsyncClient, alice: Account
    ) -> None:
        grant = (await upload_url(client, alice)).json()

        response = await client.post(f"/jobs/{grant['job_id']}/start", headers=alice.headers)

        assert response.status_code == 409


async def test_expiring_fails_only_the_uploads_past_their_time(
    client: httpx.AsyncClient, alice: Account, services: Services
) -> None:
    grant = (await upload_url(client, alice)).json()
    queued = (await upload(client, alice)).json()["id"]

    assert await jobs.expire_uploads(services.uow()) == []
    later = datetime.now(UTC) + timedelta(hours=2)
    assert await jobs.expire_uploads(services.uow(), now=later) == [grant["job_id"]]
    job = (await client.get(f"/jobs/{grant['job_id']}", headers=alice.headers)).json()
    assert (job["status"], job["error_code"]) == ("failed", "upload_expired")
    assert job["finished_at"] is not None
    assert (await settled_job(client, queued, alice.headers))["status"] == "succeeded"

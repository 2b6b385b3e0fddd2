"""The production shape: API (relay) and `stockroom worker` processes over a real
RabbitMQ, PostgreSQL and S3 (moto_server), images served by a local HTTP server."""

from __future__ import annotations

import base64
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from fastapi import FastAPI
from tests.conftest import make_account
from tests.support.databases import empty_tables_sql
from tests.support.image_server import ImageServer, serve_images
from tests.support.moto import MOTO_CREDENTIALS, running_moto_server
from tests.support.rabbitmq import private_vhost
from tests.support.redis_server import delete_prefix, require_redis
from tests.support.services import REDIS_URL, require
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import create_lamp, eventually, settled_job, settled_product
from tests.support.webhook_receiver import receive_webhooks
from tests.support.worker_process import running_worker, wait_for_children

from stockroom.app import create_app
from stockroom.config import Settings
from stockroom.domain.models import JobStatus
from stockroom.services import Services

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"rabbitmq tests' webhook key 32b").decode()
pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.xdist_group("rabbitmq")]


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    require("RabbitMQ", "127.0.0.1", 5672)
    with private_vhost() as url:
        if url is None:
            pytest.skip("rabbitmqctl is not available to create a private vhost")
        yield url


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with running_moto_server() as endpoint:
        bucket = f"stockroom-{uuid.uuid4().hex[:8]}"
        _s3_client(endpoint).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}?endpoint_url={endpoint}&region=us-east-1"


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with serve_images() as server:
        yield server


@pytest.fixture(scope="module")
def worker_env(postgres_url: str, broker_url: str, s3_url: str) -> dict[str, str]:
    require("Redis", "127.0.0.1", 6379)
    return {
        "STOCKROOM_ENVIRONMENT": "test",
        "STOCKROOM_DATABASE_URL": postgres_url,
        "STOCKROOM_BROKER_URL": broker_url,
        "STOCKROOM_STORAGE_URL": s3_url,
        "STOCKROOM_CACHE_URL": REDIS_URL,
        "STOCKROOM_CACHE_KEY_PREFIX": f"stockroom-test-{uuid.uuid4().hex[:8]}:",
        "STOCKROOM_CACHE_SOCKET_TIMEOUT_SECONDS": "2",  # as in tests/support/settings.py
        "STOCKROOM_ALLOW_PRIVATE_NETWORKS": "true",
        "STOCKROOM_JOB_MAX_RETRIES": "2",
        "STOCKROOM_JOB_MIN_BACKOFF_MS": "50",
        "STOCKROOM_JOB_MAX_BACKOFF_MS": "200",
        "STOCKROOM_LOG_FORMAT": "json",
        "STOCKROOM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STOCKROOM_WEBHOOK_TIMEOUT_SECONDS": "30",
        "STOCKROOM_WEBHOOK_RETRY_SCHEDULE": "1,1",
        **MOTO_CREDENTIALS,
    }


@pytest.fixture(scope="module")
def worker_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker") / "worker.log"


@pytest.fixture(scope="module")
def worker(worker_env: dict[str, str], worker_log: Path) -> Iterator[int]:
    with running_worker(worker_env, worker_log, processes=2) as pid:
        wait_for_children(pid, 2)
        yield pid


def _s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def _settings(env: dict[str, str], tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        key.removeprefix("STOCKROOM_").lower(): value
        for key, value in env.items()
        if key.startswith("STOCKROOM_")
    }
    values |= {"log_format": "console", "log_level": "WARNING", **overrides}
    return Settings(_env_file=None, **values)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in MOTO_CREDENTIALS.items():
        monkeypatch.setenv(key, value)


async def _serve(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


@pytest.fixture
async def api(
    worker_env: dict[str, str], worker: int, tmp_path: Path, aws_env: None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async for pair in _serve(_settings(worker_env, tmp_path)):
        services: Services = pair[0].state.services
        async with services.engine.begin() as connection:
            for statement in empty_tables_sql("postgresql"):
                await connection.exec_driver_sql(statement)
        # The ids start again at 1: a body an earlier test cached under the same id (another
        # owner's product) would answer for the new one.
        redis = require_redis()
        try:
            await delete_prefix(redis, worker_env["STOCKROOM_CACHE_KEY_PREFIX"])
        finally:
            await redis.aclose()
        yield pair


async def test_worker_processes_compress_into_s3_in_order(
    api: tuple[FastAPI, httpx.AsyncClient], images: ImageServer
) -> None:
    app, client = api
    alice = await make_account(app.state.services, "alice@example.com")
    urls = [
        images.url("image.jpg"),
        images.url("image.png"),
        images.url("status/404"),
        images.url("text.txt"),
    ]

    created = await create_lamp(client, alice.headers, urls)
    product = await settled_product(client, created["id"], alice.headers)

    assert [i["status"] for i in product["images"]] == ["ready", "ready", "failed", "failed"]
    assert [i["error_code"] for i in product["images"]][2:] == ["http_4xx", "not_an_image"]
    jpeg_url = product["compressed_product_images"][0]
    assert "/img/" in jpeg_url
    key = jpeg_url.split(f"{_bucket(app)}/", 1)[1]
    stored = _s3(app).get_object(Bucket=_bucket(app), Key=key)
    assert stored["ContentType"] == "image/jpeg"
    assert stored["CacheControl"] == "public, max-age=31536000, immutable"


async def test_a_standalone_job_runs_on_the_jobs_queue_into_s3(
    api: tuple[FastAPI, httpx.AsyncClient], images: ImageServer
) -> None:
    app, client = api
    alice = await make_account(app.state.services, "jobs@example.com")

    accepted = await client.post(
        "/jobs",
        json={
            "image_url": images.url("image.jpg"),
            "operations": [{"op": "force_resize", "width": 20, "height": 10}],
        },
        headers=alice.headers,
    )
    job = await settled_job(client, accepted.json()["id"], alice.headers)

    assert job["status"] == "succeeded", job
    assert (job["width"], job["height"]) == (20, 10)
    key = job["output_url"].split(f"{_bucket(app)}/", 1)[1]
    assert _s3(app).get_object(Bucket=_bucket(app), Key=key)["ContentType"] == "image/jpeg"


async def test_broker_down_at_creation_loses_nothing(
    worker_env: dict[str, str],
    worker: int,
    tmp_path: Path,
    aws_env: None,
    images: ImageServer,
) -> None:
    """The API reaches RabbitMQ through a proxy we cut; the workers keep their own link."""
    async with TcpProxy("127.0.0.1", 5672, mode="refuse") as proxy:
        vhost = worker_env["STOCKROOM_BROKER_URL"].rsplit("/", 1)[1]
        settings = _settings(
            worker_env, tmp_path, broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
        )
        async for app, client in _serve(settings):
            alice = await make_account(app.state.services, f"{uuid.uuid4().hex}@example.com")

            created = await create_lamp(client, alice.headers, [images.url("image.jpg")])
            ready = await client.get("/ready")
            pending = await client.get(f"/products/{created['id']}", headers=alice.headers)

            assert created["images"][0]["status"] == "pending"
            assert ready.status_code == 503
            assert "broker" in ready.json()["detail"]
            assert pending.status_code == 200, pending.text
            assert pending.json()["images"][0]["status"] == "pending"

            proxy.set_mode("forward")
            product = await settled_product(client, created["id"], alice.headers, timeout=60)

            assert product["images"][0]["status"] == "ready"


async def test_sigkill_of_a_worker_mid_batch_still_processes_every_image_once(
    api: tuple[FastAPI, httpx.AsyncClient], images: ImageServer, worker: int
) -> None:
    app, client = api
    services: Services = app.state.services
    alice = await make_account(services, "bulk@example.com")
    products = [
        await create_lamp(
            client, alice.headers, [images.url(f"photo/{p * 10 + i}.jpg") for i in range(10)]
        )
        for p in range(10)
    ]

    async def some_ready() -> bool:
        async with services.uow() as uow:
            jobs = await uow.image_jobs.search(user_id=alice.id, limit=200)
        return sum(job.status is JobStatus.SUCCEEDED for job in jobs) >= 10

    await eventually(some_ready, timeout=60)
    victim = wait_for_children(worker, 2)[0]
    os.kill(victim, signal.SIGKILL)

    for created in products:
        product = await settled_product(client, created["id"], alice.headers, timeout=120)
        assert {image["status"] for image in product["images"]} == {"ready"}
    async with services.uow() as uow:
        jobs = await uow.image_jobs.search(user_id=alice.id, limit=200)
    assert len(jobs) == 100
    assert {job.status for job in jobs} == {JobStatus.SUCCEEDED}
    keys = {job.output_key for job in jobs}
    assert len(keys) == 100  # one object per distinct source, none rewritten under a new name
    listed = _s3(app).list_objects_v2(Bucket=_bucket(app), Prefix="img/")
    assert {item["Key"] for item in listed.get("Contents", [])} >= keys
    assert victim not in wait_for_children(worker, 2)  # the supervisor replaced it


def test_worker_processes_start_with_two_malloc_arenas(
    worker: int, worker_env: dict[str, str]
) -> None:
    assert "MALLOC_ARENA_MAX" not in worker_env
    for child in wait_for_children(worker, 2):
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_ARENA_MAX=2" in environ


async def test_sigkill_of_a_worker_mid_batch_loses_no_standalone_job(
    api: tuple[FastAPI, httpx.AsyncClient], images: ImageServer, worker: int
) -> None:
    app, client = api
    alice = await make_account(app.state.services, "jobs-bulk@example.com")
    ids = []
    for n in range(60):
        accepted = await client.post(
            "/jobs",
            json={
                "image_url": images.url(f"photo/{1000 + n}.jpg"),
                "operations": [{"op": "rotate", "degrees": 90}, {"op": "compress", "quality": 40}],
            },
            headers=alice.headers,
        )
        ids.append(accepted.json()["id"])

    async def some_succeeded() -> bool:
        listed = await client.get("/jobs?status=succeeded&limit=100", headers=alice.headers)
        return len(listed.json()["items"]) >= 5

    await eventually(some_succeeded, timeout=60)
    victim = wait_for_children(worker, 2)[0]
    os.kill(victim, signal.SIGKILL)

    settled = [await settled_job(client, job_id, alice.headers, timeout=120) for job_id in ids]
    assert [job["status"] for job in settled] == ["succeeded"] * 60
    assert len({job["output_url"] for job in settled}) == 60
    assert victim not in wait_for_children(worker, 2)


async def test_sigkill_of_the_workers_mid_delivery_loses_no_webhook(
    api: tuple[FastAPI, httpx.AsyncClient], images: ImageServer, worker: int
) -> None:
    """The receiver holds the first attempt; the workers die meanwhile. RabbitMQ hands the
    unacknowledged message to their replacements, which send it again, same webhook-id."""
    app, client = api
    alice = await make_account(app.state.services, "hooks@example.com")
    with receive_webhooks(WEBHOOK_SECRET) as receiver:
        accepted = await client.post(
            "/jobs",
            json={"image_url": images.url("image.jpg"), "callback_url": receiver.url("hang/6")},
            headers=alice.headers,
        )
        job_id = accepted.json()["id"]
        await eventually(lambda: _at_least(receiver.requests, 1), timeout=60)
        for child in wait_for_children(worker, 2):
            os.kill(child, signal.SIGKILL)

        async def recorded() -> list[Any] | None:
            listed = await client.get(
                "/webhooks/deliveries", params={"job_id": job_id}, headers=alice.headers
            )
            return listed.json()["items"] or None

        (attempt,) = await eventually(recorded, timeout=90)
    assert (attempt["attempt"], attempt["status_code"]) == (1, 200)
    assert len(receiver.requests) >= 2
    assert {r.headers["webhook-id"] for r in receiver.requests} == {attempt["webhook_id"]}
    assert all(r.verify_error is None for r in receiver.requests)


async def _at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def test_worker_processes_run_the_actors_on_uvloop(worker: int, worker_log: Path) -> None:
    async def started_loops() -> list[str]:
        lines = worker_log.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        loops = [e["event_loop"] for e in events if e.get("event") == "worker.started"]
        return loops if len(loops) >= 2 else []

    assert set(await eventually(started_loops, timeout=30)) == {"uvloop"}


def _bucket(app: FastAPI) -> str:
    url: str = app.state.services.settings.storage_url
    return url.removeprefix("s3://").split("?", 1)[0].split("/", 1)[0]


def _s3(app: FastAPI) -> Any:
    endpoint = app.state.services.settings.storage_url.split("endpoint_url=", 1)[1].split("&")[0]
    return _s3_client(endpoint)

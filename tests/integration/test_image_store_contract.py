"""One contract for every ImageStore: the same assertions run on the file and S3 backends."""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.stub import Stubber
from tests.support.moto import MOTO_CREDENTIALS, running_moto_server
from tests.support.services import free_port

from stockroom.adapters.storage import FileImageStore, S3ImageStore, build_image_store
from stockroom.adapters.storage.s3 import CACHE_CONTROL
from stockroom.domain.errors import StorageUnavailable
from stockroom.domain.ports import ImageStore

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

PUBLIC_BASE = "http://testserver"
KEY = "img/ab/cdef0123456789.jpg"
JPEG = b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9"


@dataclass(frozen=True)
class Backend:
    """A store under test and the URL prefix its `url_for` must produce."""

    store: ImageStore
    url_prefix: str


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with running_moto_server() as endpoint:
        yield endpoint


def s3_store(endpoint: str, bucket: str, query: str = "") -> S3ImageStore:
    url = f"s3://{bucket}?endpoint_url={endpoint}&region=us-east-1{query}"
    return S3ImageStore.from_url(
        url,
        access_key=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def raw_client(endpoint: str | None = None) -> S3Client:
    """A plain boto3 client, to look behind the store or to stub."""
    session = boto3.session.Session(
        aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    return session.client("s3", endpoint_url=endpoint)


def unique_bucket() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
async def s3_backend(moto_endpoint: str) -> AsyncIterator[Backend]:
    bucket = unique_bucket()
    store = s3_store(moto_endpoint, bucket)
    await store.create_bucket_if_missing()
    yield Backend(store, f"{moto_endpoint}/{bucket}/")
    await store.close()


@pytest.fixture
async def file_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    store = FileImageStore(tmp_path / "media", PUBLIC_BASE)
    yield Backend(store, f"{PUBLIC_BASE}/media/")
    await store.close()


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each contract test runs once per backend; moto starts only when an S3 test needs it."""
    selected: Backend = request.getfixturevalue(f"{request.param}_backend")
    return selected


# -- the contract --------------------------------------------------------------------------
async def test_put_then_get_returns_the_bytes(backend: Backend) -> None:
    await backend.store.put(KEY, JPEG, "image/jpeg")

    assert await backend.store.get(KEY) == JPEG


async def test_put_returns_the_public_url_of_the_key(backend: Backend) -> None:
    url = await backend.store.put(KEY, JPEG, "image/jpeg")

    assert url == backend.store.url_for(KEY) == backend.url_prefix + KEY


async def test_put_twice_under_one_key_is_harmless(backend: Backend) -> None:
    first = await backend.store.put(KEY, JPEG, "image/jpeg")
    second = await backend.store.put(KEY, JPEG, "image/jpeg")

    assert first == second
    assert await backend.store.get(KEY) == JPEG


async def test_get_of_a_missing_key_raises_key_error(backend: Backend) -> None:
    with pytest.raises(KeyError):
        await backend.store.get("img/00/missing.jpg")


async def test_delete_removes_keys_and_ignores_absent_ones(backend: Backend) -> None:
    other = "img/cd/other.webp"
    await backend.store.put(KEY, JPEG, "image/jpeg")
    await backend.store.put(other, b"webp", "image/webp")

    await backend.store.delete([KEY, "img/00/never-stored.jpg"])

    with pytest.raises(KeyError):
        await backend.store.get(KEY)
    assert await backend.store.get(other) == b"webp"


async def test_delete_of_nothing_does_nothing(backend: Backend) -> None:
    await backend.store.put(KEY, JPEG, "image/jpeg")

    await backend.store.delete([])

    assert await backend.store.get(KEY) == JPEG


async def test_ping_answers(backend: Backend) -> None:
    await backend.store.ping()


# -- S3 only -------------------------------------------------------------------------------
@pytest.mark.parametrize("operation", ["ping", "put", "get", "delete"])
async def test_s3_dead_endpoint_raises_storage_unavailable_quickly(operation: str) -> None:
    store = s3_store(f"http://127.0.0.1:{free_port()}", unique_bucket())
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "ping": store.ping,
        "put": lambda: store.put(KEY, JPEG, "image/jpeg"),
        "get": lambda: store.get(KEY),
        "delete": lambda: store.delete([KEY]),
    }
    started = time.monotonic()

    with pytest.raises(StorageUnavailable):
        await calls[operation]()

    assert time.monotonic() - started < 5
    await store.close()


async def test_s3_ping_of_a_missing_bucket_raises_storage_unavailable(moto_endpoint: str) -> None:
    store = s3_store(moto_endpoint, unique_bucket())

    with pytest.raises(StorageUnavailable):
        await store.ping()
    await store.close()


async def test_s3_create_bucket_if_missing_is_idempotent(s3_backend: Backend) -> None:
    assert isinstance(s3_backend.store, S3ImageStore)

    await s3_backend.store.create_bucket_if_missing()

    await s3_backend.store.ping()


async def test_s3_objects_carry_content_type_and_immutable_cache_control(
    moto_endpoint: str, s3_backend: Backend
) -> None:
    await s3_backend.store.put(KEY, JPEG, "image/jpeg")

    bucket = s3_backend.url_prefix.removeprefix(f"{moto_endpoint}/").rstrip("/")
    head = raw_client(moto_endpoint).head_object(Bucket=bucket, Key=KEY)
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == CACHE_CONTROL
    assert head["ContentLength"] == len(JPEG)


async def test_s3_prefix_is_prepended_to_object_keys(moto_endpoint: str) -> None:
    bucket = unique_bucket()
    store = s3_store(moto_endpoint, f"{bucket}/media/v1/")
    await store.create_bucket_if_missing()

    url = await store.put(KEY, JPEG, "image/jpeg")

    assert url == f"{moto_endpoint}/{bucket}/media/v1/{KEY}"
    stored = raw_client(moto_endpoint).get_object(Bucket=bucket, Key=f"media/v1/{KEY}")
    assert stored["Body"].read() == JPEG
    assert await store.get(KEY) == JPEG
    await store.close()


async def test_s3_delete_sends_at_most_1000_keys_per_request() -> None:
    client = raw_client()
    store = S3ImageStore(client, "bucket")
    keys = [f"img/{n:04d}.jpg" for n in range(2500)]
    with Stubber(client) as stubber:
        for start, stop in [(0, 1000), (1000, 2000), (2000, 2500)]:
            objects = [{"Key": key} for key in keys[start:stop]]
            expected = {"Bucket": "bucket", "Delete": {"Objects": objects, "Quiet": True}}
            stubber.add_response("delete_objects", {}, expected)

        await store.delete(keys)

        stubber.assert_no_pending_responses()


async def test_s3_delete_reports_objects_it_could_not_delete() -> None:
    client = raw_client()
    store = S3ImageStore(client, "bucket")
    with Stubber(client) as stubber:
        errors = [{"Key": KEY, "Code": "AccessDenied", "Message": "Access Denied"}]
        stubber.add_response("delete_objects", {"Errors": errors})

        with pytest.raises(StorageUnavailable, match="AccessDenied"):
            await store.delete([KEY])


def test_s3_url_for_uses_the_public_base_then_the_endpoint_then_aws() -> None:
    cdn = s3_store("http://127.0.0.1:9", "bucket", "&public_base_url=https://cdn.example.com/")
    path_style = s3_store("http://127.0.0.1:9", "bucket")
    aws = S3ImageStore.from_url("s3://bucket/p?region=eu-west-1", access_key="a", secret_key="b")

    assert cdn.url_for(KEY) == f"https://cdn.example.com/{KEY}"
    assert path_style.url_for(KEY) == f"http://127.0.0.1:9/bucket/{KEY}"
    assert aws.url_for(KEY) == f"https://bucket.s3.amazonaws.com/p/{KEY}"


@pytest.mark.parametrize(
    "url", ["s3://", "s3:///prefix", "s3://bucket?endpoint=http://x", "https://bucket"]
)
def test_s3_rejects_malformed_urls(url: str) -> None:
    with pytest.raises(ValueError, match="S3 storage URL"):
        S3ImageStore.from_url(url)


# -- file only -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "",
        "../escape.jpg",
        "img/../../escape.jpg",
        "img/./a.jpg",
        "/etc/passwd",
        "img//a.jpg",
        "img/a.jpg/",
        ".hidden.jpg",
        "img/.tmp-123",
        "img\\a.jpg",
        "img/a b.jpg",
        "img/ä.jpg",
        "img/a.jpg\x00",
        "a" * 513,
    ],
)
async def test_file_refuses_unsafe_keys(tmp_path: Path, key: str) -> None:
    store = FileImageStore(tmp_path, PUBLIC_BASE)

    with pytest.raises(ValueError, match="invalid storage key"):
        await store.put(key, JPEG, "image/jpeg")
    with pytest.raises(ValueError, match="invalid storage key"):
        await store.get(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        await store.delete([key])
    with pytest.raises(ValueError, match="invalid storage key"):
        store.url_for(key)
    assert list(tmp_path.iterdir()) == []


async def test_file_put_leaves_only_the_final_file(tmp_path: Path) -> None:
    store = FileImageStore(tmp_path, PUBLIC_BASE)

    await store.put(KEY, JPEG, "image/jpeg")
    await store.put(KEY, b"replaced", "image/jpeg")

    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [KEY]
    assert (tmp_path / KEY).read_bytes() == b"replaced"


async def test_file_put_makes_the_name_durable_not_only_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync the new directories' parents, the file, then the directory it was renamed into:
    what a power cut right after `put` returns cannot take back."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            found = [p for p in (tmp_path, *tmp_path.rglob("*")) if p.stat().st_ino == info.st_ino]
            synced.append(found[0].relative_to(tmp_path).as_posix() + "/")
        else:
            synced.append("file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = FileImageStore(tmp_path, PUBLIC_BASE)

    await store.put(KEY, JPEG, "image/jpeg")  # makes img/ and img/ab/
    first = list(synced)
    synced.clear()
    await store.put("img/ab/other.jpg", JPEG, "image/jpeg")

    assert first == ["./", "img/", "file", "img/ab/"]
    assert synced == ["file", "img/ab/"]


async def test_file_get_of_a_directory_key_raises_key_error(tmp_path: Path) -> None:
    store = FileImageStore(tmp_path, PUBLIC_BASE)
    await store.put(KEY, JPEG, "image/jpeg")

    with pytest.raises(KeyError):
        await store.get("img/ab")


async def test_file_unusable_root_raises_storage_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "not-a-directory"
    root.write_bytes(b"")
    store = FileImageStore(root, PUBLIC_BASE)

    with pytest.raises(StorageUnavailable):
        await store.ping()
    with pytest.raises(StorageUnavailable):
        await store.put(KEY, JPEG, "image/jpeg")


# -- choosing a backend --------------------------------------------------------------------
def test_build_image_store_resolves_a_relative_file_url_against_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    store = build_image_store("file://./media", PUBLIC_BASE + "/")

    assert isinstance(store, FileImageStore)
    assert store.root == tmp_path / "media"
    assert store.url_for(KEY) == f"{PUBLIC_BASE}/media/{KEY}"


def test_build_image_store_accepts_an_absolute_file_url(tmp_path: Path) -> None:
    store = build_image_store(f"file://{tmp_path}/media", PUBLIC_BASE)

    assert isinstance(store, FileImageStore)
    assert store.root == tmp_path / "media"


def test_build_image_store_picks_s3_for_s3_urls() -> None:
    store = build_image_store(
        "s3://bucket?endpoint_url=http://127.0.0.1:9", PUBLIC_BASE, access_key="a", secret_key="b"
    )

    assert isinstance(store, S3ImageStore)
    assert store.url_for(KEY) == f"http://127.0.0.1:9/bucket/{KEY}"


@pytest.mark.parametrize("url", ["ftp://host/media", "memory://", "./media", ""])
def test_build_image_store_rejects_unknown_schemes(url: str) -> None:
    with pytest.raises(ValueError, match=r"unsupported storage URL scheme .*file://, s3://"):
        build_image_store(url, PUBLIC_BASE)

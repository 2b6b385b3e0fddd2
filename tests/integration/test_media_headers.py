"""/media answers are sandboxed: every status carries the CSP sandbox and nosniff."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from stockroom.api.media import IMMUTABLE, SANDBOX_HEADERS

SANDBOX = "default-src 'none'; sandbox"
BODY = b"<script>alert(document.cookie)</script>"  # what a hostile upload would hope to run


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Media never touches the database: one engine is enough."""
    return sqlite_url


@pytest.fixture
def stored(tmp_path: Path) -> str:
    """A file in the app's media root (`tmp_path / "media"`, see tests/support/settings.py)."""
    root = tmp_path / "media" / "ab"
    root.mkdir(parents=True, exist_ok=True)
    (root / "abcdef.png").write_bytes(BODY)
    return "/media/ab/abcdef.png"


def assert_sandboxed(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == SANDBOX
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_headers_are_the_documented_ones() -> None:
    assert SANDBOX_HEADERS["Content-Security-Policy"] == SANDBOX


async def test_a_stored_file_is_sandboxed(client: httpx.AsyncClient, stored: str) -> None:
    response = await client.get(stored)
    assert response.status_code == 200
    assert response.content == BODY
    assert response.headers["cache-control"] == IMMUTABLE
    assert_sandboxed(response)
    head = await client.head(stored)
    assert head.status_code == 200
    assert_sandboxed(head)


async def test_a_conditional_request_is_sandboxed(client: httpx.AsyncClient, stored: str) -> None:
    etag = (await client.get(stored)).headers["etag"]
    response = await client.get(stored, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert_sandboxed(response)


async def test_range_requests_are_sandboxed(client: httpx.AsyncClient, stored: str) -> None:
    partial = await client.get(stored, headers={"Range": "bytes=0-7"})
    assert partial.status_code == 206
    assert partial.content == BODY[:8]
    assert_sandboxed(partial)
    beyond = await client.get(stored, headers={"Range": "bytes=9999-"})
    assert beyond.status_code == 416
    assert_sandboxed(beyond)


async def test_a_missing_file_is_a_sandboxed_problem(
    client: httpx.AsyncClient, stored: str
) -> None:
    response = await client.get("/media/ab/missing.png")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
    assert_sandboxed(response)


async def test_before_the_first_image_every_path_is_a_sandboxed_404(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert not (tmp_path / "media").exists()
    response = await client.get("/media/ab/missing.png")
    assert response.status_code == 404
    assert_sandboxed(response)


async def test_a_wrong_method_is_a_sandboxed_problem(
    client: httpx.AsyncClient, stored: str
) -> None:
    response = await client.post(stored)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert_sandboxed(response)

"""A worker process runs at most STOCKROOM_WORKER_IMAGE_CONCURRENCY libvips operations at
once, whatever its threads; the other threads' jobs still download and write back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Account
from tests.support.image_server import ImageServer, serve_images
from tests.support.settings import make_settings
from tests.support.waiting import settled_product

from stockroom.config import Settings
from stockroom.pipeline import operations, processing
from stockroom.pipeline.operations import ProcessedImage


@pytest.fixture
def images() -> Iterator[ImageServer]:
    with serve_images() as server:
        yield server


@pytest.fixture(params=[1, 2], ids=["one-slot", "two-slots"])
def slots(request: pytest.FixtureRequest) -> int:
    value: int = request.param
    return value


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path, slots: int) -> Settings:
    return make_settings(
        sqlite_url,
        tmp_path / "media",
        allow_private_networks=True,
        worker_threads=4,
        worker_image_concurrency=slots,
    )


class Overlap:
    """Wraps `process`: counts how many calls run at once (each lasts at least 50 ms)."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self._lock = threading.Lock()
        self.running = self.most = self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> ProcessedImage:
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)
            result: ProcessedImage = self._process(*args, **kwargs)
            return result
        finally:
            with self._lock:
                self.running -= 1


async def test_libvips_runs_at_most_the_configured_images_at_once(
    client: httpx.AsyncClient,
    alice: Account,
    images: ImageServer,
    slots: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overlap = Overlap(operations.process)
    monkeypatch.setattr(processing, "process", overlap)  # the name the pipeline calls
    urls = [images.url(f"image.jpg?n={n}") for n in range(6)]

    created = await client.post(
        "/products",
        json={"product_name": "Lamp", "product_price": "5", "product_images": urls},
        headers=alice.headers,
    )
    product = await settled_product(client, created.json()["id"], alice.headers)

    assert [image["status"] for image in product["images"]] == ["ready"] * 6
    assert overlap.calls == 6
    assert overlap.most == slots  # 4 threads, 6 jobs: only the slots hold them back

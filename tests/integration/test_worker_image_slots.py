"""A worker process runs at most STOCKROOM_WORKER_IMAGE_CONCURRENCY libvips operations at
once, whatever its threads; the other threads' jobs wait their turn in the pool's queue.

Deterministic: every libvips call is held until the test lets one go, and the test waits on
events (a job handed to the pool, a call started, a call finished), never on the clock. It
asserts what the pool allows once every thread that could take a job has taken one, not how
the OS happened to schedule threads; one thread too many makes it fail every time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import pytest
from tests.conftest import Account
from tests.support.image_server import ImageServer
from tests.support.settings import make_settings
from tests.support.waiting import settled_product

from stockroom import bootstrap
from stockroom.config import Settings
from stockroom.pipeline import operations, processing
from stockroom.pipeline.operations import ProcessedImage

P = ParamSpec("P")
T = TypeVar("T")

IMAGES = 6
THREADS = 4  # the worker's threads: at most this many jobs in flight at once
DEADLINE = 30.0  # only for a pipeline that is stuck; no assertion depends on timing


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
        worker_threads=THREADS,
        worker_image_concurrency=slots,
    )


class Gate:
    """Stands in for `process` and watches the image pool: counts the jobs handed to the
    pool and the calls running and finished, and holds each call until `release_one()`."""

    def __init__(self, process: Callable[..., ProcessedImage]) -> None:
        self._process = process
        self._changed = threading.Condition()
        self._permits = 0
        self._open = False
        self.submitted = self.running = self.finished = self.most = 0
        self.pools: list[str] = []  # the thread-name prefix of each pool made
        self.stuck = False

    def executor(self, max_workers: int, *, thread_name_prefix: str = "") -> ThreadPoolExecutor:
        """What bootstrap builds the image pool with, so the test sees every hand-off."""
        prefix = f"watched-{thread_name_prefix}-{len(self.pools)}"
        self.pools.append(prefix)
        return _WatchedExecutor(self, max_workers, thread_name_prefix=prefix)

    def pool_threads(self) -> int:
        """The pool's threads: started in `submit` itself, up to its size, and kept."""
        return sum(t.name.startswith(f"{p}_") for t in threading.enumerate() for p in self.pools)

    def submitted_one(self) -> None:
        with self._changed:
            self.submitted += 1
            self._changed.notify_all()

    def __call__(self, *args: Any, **kwargs: Any) -> ProcessedImage:
        with self._changed:
            self.running += 1
            self.most = max(self.most, self.running)
            self._changed.notify_all()
            if not self._changed.wait_for(lambda: self._open or self._permits > 0, DEADLINE):
                self.stuck = True
            self._permits = max(0, self._permits - 1)
        try:
            return self._process(*args, **kwargs)
        finally:
            with self._changed:
                self.running -= 1
                self.finished += 1
                self._changed.notify_all()

    def has_finished(self, calls: int) -> bool:
        return self.finished == calls

    def release_one(self) -> None:
        with self._changed:
            self._permits += 1
            self._changed.notify_all()

    def open(self) -> None:
        """Let every call through (at the end, or when the test failed half-way)."""
        with self._changed:
            self._open = True
            self._changed.notify_all()

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, DEADLINE):
                raise AssertionError(f"stuck waiting for {what}: {self.state()}")

    def state(self) -> str:
        return (
            f"submitted={self.submitted} running={self.running} finished={self.finished} "
            f"pool threads={self.pool_threads()} stuck={self.stuck}"
        )


class _WatchedExecutor(ThreadPoolExecutor):
    def __init__(self, gate: Gate, max_workers: int, *, thread_name_prefix: str) -> None:
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self._gate = gate

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)  # starts a thread if the pool may grow
        self._gate.submitted_one()
        return future


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Installed before the app starts (the `client` fixture), so its worker's pool is watched."""
    watched = Gate(operations.process)
    monkeypatch.setattr(processing, "process", watched)  # the name the pipeline calls
    monkeypatch.setattr(bootstrap, "ThreadPoolExecutor", watched.executor)
    return watched


def let_jobs_through_one_by_one(gate: Gate, slots: int) -> None:
    """Each round: wait until every job in flight has reached the pool and every pool thread
    that can take one has; check how many run and how many wait; then let one finish."""
    for done in range(IMAGES):
        in_flight = min(THREADS, IMAGES - done)

        def settled(done: int = done, in_flight: int = in_flight) -> bool:
            return (
                gate.finished == done
                and gate.submitted == done + in_flight
                and gate.running == min(gate.pool_threads(), in_flight)
            )

        gate.wait_until(settled, f"round {done}: {in_flight} jobs at the pool")
        assert gate.running == min(slots, in_flight), gate.state()  # never more than the slots
        waiting = gate.submitted - gate.finished - gate.running
        assert waiting == in_flight - gate.running, gate.state()  # the others wait their turn
        gate.release_one()
        gate.wait_until(partial(gate.has_finished, done + 1), f"round {done} to finish")


async def test_libvips_runs_at_most_the_configured_images_at_once(
    gate: Gate,
    client: httpx.AsyncClient,
    alice: Account,
    images: ImageServer,
    slots: int,
) -> None:
    urls = [images.url(f"image.jpg?n={n}") for n in range(IMAGES)]

    created = await client.post(
        "/products",
        json={"product_name": "Lamp", "product_price": "5", "product_images": urls},
        headers=alice.headers,
    )
    try:
        await asyncio.to_thread(let_jobs_through_one_by_one, gate, slots)
    finally:
        gate.open()
    product = await settled_product(client, created.json()["id"], alice.headers)

    assert [image["status"] for image in product["images"]] == ["ready"] * IMAGES
    assert (gate.finished, gate.most, gate.stuck) == (IMAGES, slots, False)
    assert len(gate.pools) == 1  # one pool per worker process

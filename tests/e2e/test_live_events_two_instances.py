"""GET /events across two `stockroom serve` processes sharing one Redis: a client on each
sees the same job finish, a stream resumed with Last-Event-ID misses nothing, and another
user's stream sees nothing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_processes import cli_token, is_up, two_instances
from tests.support.image_server import ImageServer
from tests.support.waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    data: dict[str, Any]


@pytest.fixture
def instances(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    with two_instances(postgres_url, tmp_path, STOCKROOM_ALLOW_PRIVATE_NETWORKS="true") as running:
        yield running


async def stream(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], into: list[Event]
) -> None:
    """Append each event of the stream to `into` until cancelled."""
    async with http.stream("GET", url, headers=headers, timeout=None) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if not line:
                if "data" in fields:
                    into.append(Event(fields["id"], fields["event"], json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")


@contextlib.asynccontextmanager
async def listening(
    http: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> AsyncIterator[list[Event]]:
    events: list[Event] = []
    task = asyncio.create_task(stream(http, url, headers, events))
    await asyncio.sleep(1)  # subscribed (the response headers come once it is)
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def finished(events: list[Event], job_id: str) -> Event | None:
    return next(
        (e for e in events if e.kind == "job" and e.data["id"] == job_id
         and e.data["status"] == "succeeded"),
        None,
    )  # fmt: skip


async def test_clients_on_both_instances_see_a_job_finish(
    instances: tuple[str, str, dict[str, str]], images: ImageServer
) -> None:
    first, second, env = instances
    async with httpx.AsyncClient() as http:
        for base in (first, second):
            await eventually(functools.partial(is_up, http, base), timeout=30, interval=0.1)
        alice = {"Authorization": f"Bearer {cli_token(env, 'live-a@example.com')}"}
        bob = {"Authorization": f"Bearer {cli_token(env, 'live-b@example.com')}"}
        async with (
            listening(http, f"{first}/events", alice) as on_first,
            listening(http, f"{second}/events", alice) as on_second,
            listening(http, f"{second}/events", bob) as bobs,
        ):
            accepted = await http.post(
                f"{first}/jobs", json={"image_url": images.url("image.jpg")}, headers=alice
            )
            job_id = accepted.json()["id"]

            async def both_saw_it() -> bool:
                return bool(finished(on_first, job_id) and finished(on_second, job_id))

            await eventually(both_saw_it, timeout=30)
            seen = finished(on_second, job_id)
            assert seen is not None
            assert seen == finished(on_first, job_id)  # the same event, same id
            assert seen.data["output_url"]
            assert [e.data["status"] for e in on_second if e.data["id"] == job_id] == [
                "processing",
                "succeeded",
            ]
            assert bobs == []

        # Resumed from its first event, a stream gets what came after it, and nothing twice.
        first_id = on_second[0].id
        async with listening(
            http, f"{second}/events", {**alice, "Last-Event-ID": first_id}
        ) as resumed:
            await eventually(lambda: _true(finished(resumed, job_id)), timeout=10)
        assert [e.id for e in resumed] == [e.id for e in on_second[1:]]


async def _true(value: object) -> bool:
    return value is not None

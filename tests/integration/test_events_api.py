"""GET /events over real HTTP: a small app with the events router (the caller and the hub
given by dependency overrides) served by uvicorn on a loopback port, since httpx's ASGI
transport buffers a whole response and cannot stream. Read by a minimal SSE client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import REGISTRY
from tests.support.services import free_port
from tests.support.waiting import eventually

from stockroom.adapters.live import LiveOptions, MemoryLiveHub, RedisLiveHub
from stockroom.api import events
from stockroom.api.errors import install_error_handlers
from stockroom.domain.live import LiveEvent, LiveHub, StreamedEvent
from stockroom.domain.models import User
from stockroom.domain.users import TOKEN_PREFIX, hash_token

ALICE = User(1, "alice@example.com", None, False, datetime(2024, 1, 1, tzinfo=UTC))
BOB = User(2, "bob@example.com", None, False, datetime(2024, 1, 1, tzinfo=UTC))
ADMIN = User(3, "root@example.com", None, True, datetime(2024, 1, 1, tzinfo=UTC))
TOKENS = {"alice": ALICE, "bob": BOB, "root": ADMIN}


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN_PREFIX}{token}", **headers}


class TokenLookups:
    """The callers by token, as the route authenticates them (`TOKENS`, prefixed)."""

    async def user_by_token_hash(self, token_hash: str) -> User | None:
        for token, user in TOKENS.items():
            if hash_token(TOKEN_PREFIX + token) == token_hash:
                return user
        return None


def services_with(hub: LiveHub) -> SimpleNamespace:
    """What the route reads of the app's services: the hub, and what authenticates."""
    return SimpleNamespace(
        live=hub, lookups=TokenLookups(), token_cache=None, auth_failure_limit=None
    )


@dataclass
class Frame:
    """One SSE frame: an event (id, event, data) or a comment line."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    comment: str | None = None


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    frame = Frame()
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Frame(comment=line[1:].strip())
        elif line == "":
            if frame.event is not None or frame.data is not None:
                yield frame
            frame = Frame()
        else:
            field, _, value = line.partition(": ")
            if field == "data":
                frame.data = value if frame.data is None else f"{frame.data}\n{value}"
            elif field in ("id", "event"):
                setattr(frame, field, value)


async def next_event(stream: AsyncIterator[Frame], timeout: float = 5) -> Frame:
    async with asyncio.timeout(timeout):
        async for frame in stream:
            if frame.comment is None:
                return frame
    raise AssertionError("the stream ended")


def build_app(
    hub: LiveHub, *, ping_seconds: float | None = None, send_timeout: float = 30
) -> FastAPI:
    """The router alone; the hub where the app keeps it (`services.live`), the callers by
    token, the stream settings (when given) where the route looks for them."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(events.router)
    app.state.services = services_with(hub)
    if ping_seconds is not None:
        app.state.event_stream_settings = events.StreamSettings(
            ping_seconds=ping_seconds, send_timeout_seconds=send_timeout
        )
    return app


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, uvicorn.Server]]:
    """uvicorn on a free loopback port in this event loop, and a client to it."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        lifespan="off",
        # Neither: uvicorn would set its loggers' levels for the whole test process (and
        # hide later tests' uvicorn.error lines from them).
        log_config=None,
        log_level=None,
        ws="none",
        http="h11",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _started(server, task), timeout=10)
        base = f"http://127.0.0.1:{config.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield client, server
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # raise what stopped it
    return server.started


@pytest.fixture
async def hub() -> AsyncIterator[MemoryLiveHub]:
    live = MemoryLiveHub(LiveOptions(buffer_size=16))
    yield live
    await live.close()


@pytest.fixture
async def served(hub: MemoryLiveHub) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(build_app(hub, ping_seconds=0.2)) as (client, _):
        yield client


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def job_body(job_id: str, status: str) -> bytes:
    return json.dumps({"id": job_id, "status": status}).encode()


async def test_a_user_receives_their_events_and_no_one_else_s(
    served: httpx.AsyncClient, hub: MemoryLiveHub
) -> None:
    async with (
        served.stream("GET", "/events", headers=auth("alice")) as alice,
        served.stream("GET", "/events", headers=auth("bob")) as bob,
    ):
        assert alice.status_code == 200
        assert alice.headers["content-type"].startswith("text/event-stream")
        alice_frames, bob_frames = frames(alice), frames(bob)
        await hub.publish(LiveEvent(ALICE.id, "job", job_body("a1", "processing")))
        await hub.publish(LiveEvent(BOB.id, "image", b'{"product_id":7,"position":0}'))

        got = await next_event(alice_frames)
        assert got.event == "job"
        assert got.id
        assert got.data is not None
        assert json.loads(got.data) == {"id": "a1", "status": "processing"}
        # Bob's first event is his own: Alice's, published before it, never reached him.
        seen_by_bob = await next_event(bob_frames)
        assert (seen_by_bob.event, seen_by_bob.data) == ("image", '{"product_id":7,"position":0}')


async def test_an_admin_sees_only_their_own_events(
    served: httpx.AsyncClient, hub: MemoryLiveHub
) -> None:
    async with served.stream("GET", "/events", headers=auth("root")) as admin:
        stream = frames(admin)
        await hub.publish(LiveEvent(ALICE.id, "job", job_body("a1", "queued")))
        await hub.publish(LiveEvent(ADMIN.id, "import", b'{"request_id":"r1"}'))
        got = await next_event(stream)
        assert (got.event, got.data) == ("import", '{"request_id":"r1"}')


async def test_last_event_id_replays_what_the_client_missed(
    served: httpx.AsyncClient, hub: MemoryLiveHub
) -> None:
    async with served.stream("GET", "/events", headers=auth("alice")) as first:
        await hub.publish(LiveEvent(ALICE.id, "job", job_body("a1", "queued")))
        last = await next_event(frames(first))
    await hub.publish(LiveEvent(ALICE.id, "job", job_body("a1", "processing")))
    await hub.publish(LiveEvent(ALICE.id, "job", job_body("a1", "succeeded")))
    assert last.id is not None
    headers = auth("alice", **{"Last-Event-ID": last.id})
    async with served.stream("GET", "/events", headers=headers) as resumed:
        stream = frames(resumed)
        missed = [await next_event(stream), await next_event(stream)]
        await hub.publish(LiveEvent(ALICE.id, "job", job_body("a2", "queued")))
        live = await next_event(stream)
    statuses = [json.loads(frame.data or "")["status"] for frame in missed]
    assert statuses == ["processing", "succeeded"]
    assert json.loads(live.data or "") == {"id": "a2", "status": "queued"}
    assert len({last.id, *(frame.id for frame in [*missed, live])}) == 4


async def test_an_idle_stream_gets_a_heartbeat_comment(served: httpx.AsyncClient) -> None:
    async with served.stream("GET", "/events", headers=auth("alice")) as response:
        async with asyncio.timeout(5):
            first = await anext(frames(response))
    assert first.comment is not None
    assert first.comment.startswith("ping")


async def test_closing_the_hub_ends_open_streams_cleanly(
    served: httpx.AsyncClient, hub: MemoryLiveHub
) -> None:
    async with served.stream("GET", "/events", headers=auth("alice")) as response:
        stream = frames(response)
        await hub.publish(LiveEvent(ALICE.id, "job", job_body("a1", "queued")))
        await next_event(stream)
        await hub.close()
        async with asyncio.timeout(5):
            rest = [frame async for frame in stream if frame.comment is None]
    assert rest == []  # the body ended: no error, no more events


async def test_a_server_shutdown_ends_open_streams(hub: MemoryLiveHub) -> None:
    async with (
        serving(build_app(hub, ping_seconds=0.2)) as (client, server),
        client.stream("GET", "/events", headers=auth("alice")) as response,
    ):
        stream = frames(response)
        await hub.publish(LiveEvent(ALICE.id, "job", job_body("a1", "queued")))
        await next_event(stream)
        server.should_exit = True  # what uvicorn's SIGTERM handler does
        async with asyncio.timeout(10):
            rest = [frame async for frame in stream if frame.comment is None]
    assert rest == []  # the body ended properly: reading it raised nothing


async def test_a_client_that_goes_away_is_unsubscribed(
    served: httpx.AsyncClient, hub: MemoryLiveHub
) -> None:
    before = metric("stockroom_sse_streams_open")
    async with served.stream("GET", "/events", headers=auth("alice")) as response:
        assert response.status_code == 200
        assert metric("stockroom_sse_streams_open") == before + 1

    async def closed() -> bool:
        return metric("stockroom_sse_streams_open") == before

    await eventually(closed, timeout=5)


async def test_a_client_that_stops_reading_is_cut_off(hub: MemoryLiveHub) -> None:
    dropped = sum(
        metric("stockroom_sse_clients_dropped_total", reason=reason)
        for reason in ("buffer_full", "send_timeout")
    )
    before = metric("stockroom_sse_streams_open")
    app = build_app(hub, ping_seconds=15, send_timeout=0.3)
    big = json.dumps({"id": "a1", "status": "queued", "padding": "x" * 200_000}).encode()

    async def cut_off() -> bool:
        now = sum(
            metric("stockroom_sse_clients_dropped_total", reason=reason)
            for reason in ("buffer_full", "send_timeout")
        )
        return now > dropped and metric("stockroom_sse_streams_open") == before

    async with (
        serving(app) as (client, _),
        client.stream("GET", "/events", headers=auth("alice")),
    ):
        # Never read: the socket buffers fill, then the hub buffer (16 events).
        for _ in range(100):
            await hub.publish(LiveEvent(ALICE.id, "job", big))
            await asyncio.sleep(0.005)
        await eventually(cut_off, timeout=10)


async def test_without_a_token_the_stream_is_refused(served: httpx.AsyncClient) -> None:
    response = await served.get("/events")
    assert response.status_code == 401


async def test_head_answers_the_headers_without_opening_a_stream(
    served: httpx.AsyncClient,
) -> None:
    before = metric("stockroom_sse_streams_open")
    response = await served.head("/events", headers=auth("alice"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert metric("stockroom_sse_streams_open") == before
    assert (await served.head("/events")).status_code == 401


async def test_an_unreachable_hub_answers_503_before_streaming() -> None:
    hub = RedisLiveHub.from_url(
        f"redis://127.0.0.1:{free_port()}/0",
        LiveOptions(socket_timeout=0.2, subscribe_timeout=0.5),
    )
    try:
        async with serving(build_app(hub)) as (client, _):
            response = await client.get("/events", headers=auth("alice"))
    finally:
        await hub.close()
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Retry-After" in response.headers
    assert response.json()["type"].endswith("/live_status_unavailable")


# The app `stockroom serve` would run, reduced to the events route, for granian to import.
GRANIAN_APP = """
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import SimpleNamespace

from fastapi import FastAPI

from stockroom.adapters.live import MemoryLiveHub
from stockroom.api import events
from stockroom.domain.models import User
from stockroom.domain.users import hash_token

ALICE = User(1, "alice@example.com", None, False, datetime.now(UTC))


class Lookups:
    async def user_by_token_hash(self, token_hash):
        return ALICE if token_hash == hash_token("sr_alice") else None


def create_app() -> FastAPI:
    hub = MemoryLiveHub()

    @asynccontextmanager
    async def lifespan(app):
        restore = events.end_streams_at_shutdown_signal()
        try:
            yield
        finally:
            restore()
            await hub.close()

    app = FastAPI(lifespan=lifespan)
    app.include_router(events.router)
    app.state.services = SimpleNamespace(
        live=hub, lookups=Lookups(), token_cache=None, auth_failure_limit=None
    )
    app.state.event_stream_settings = events.StreamSettings(ping_seconds=0.2)
    return app
"""


@pytest.mark.slow
async def test_granian_stops_with_streams_open_and_ends_them_cleanly(tmp_path: Path) -> None:
    """granian waits for open responses before its lifespan shutdown and tells them nothing:
    the signal handler the app installs is what ends them, so the worker stops at all."""
    (tmp_path / "sse_app.py").write_text(textwrap.dedent(GRANIAN_APP))
    port = free_port()
    granian = Path(sys.executable).with_name("granian")
    command = [str(granian), "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "sse_app:create_app"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/openapi.json")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout=20)
            async with client.stream("GET", "/events", headers=auth("alice")) as response:
                stream = frames(response)
                async with asyncio.timeout(5):
                    assert (await anext(stream)).comment is not None  # streaming: a ping
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):
                    rest = [frame async for frame in stream if frame.comment is None]
            assert rest == []  # ended properly: reading to the end raised nothing
        assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a":1}', b'id: 5-0\nevent: job\ndata: {"a":1}\n\n'),
        (b'{\n"a": 1\n}', b'id: 5-0\nevent: job\ndata: {\ndata: "a": 1\ndata: }\n\n'),
        (b"", b"id: 5-0\nevent: job\ndata: \n\n"),
    ],
)
def test_an_event_is_framed_with_id_kind_and_data_lines(data: bytes, expected: bytes) -> None:
    assert events.frame(StreamedEvent("5-0", "job", data)) == expected

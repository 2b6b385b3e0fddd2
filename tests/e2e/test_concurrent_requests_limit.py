"""`STOCKROOM_MAX_CONCURRENT_REQUESTS` reaches the server: with every slot held by an open
event stream, a new request waits, and is served once a stream ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.support.api_processes import cli_token, is_up, serving
from tests.support.waiting import eventually

SLOTS = 3


@contextlib.asynccontextmanager
async def held_stream(http: httpx.AsyncClient, url: str, token: str) -> AsyncIterator[None]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream("GET", url, headers=headers, timeout=None) as response:
        assert response.status_code == 200
        yield


async def test_a_request_waits_while_streams_hold_every_slot(tmp_path: Path) -> None:
    env = {
        "STOCKROOM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'stockroom.db'}",
        "STOCKROOM_STORAGE_URL": f"file://{tmp_path / 'media'}",
        "STOCKROOM_LOG_LEVEL": "WARNING",
        "STOCKROOM_MAX_CONCURRENT_REQUESTS": str(SLOTS),
    }
    with serving(env, tmp_path / "serve.log") as base:
        async with httpx.AsyncClient() as http:
            await eventually(lambda: is_up(http, base), timeout=30)
            token = await asyncio.to_thread(cli_token, env, "a@example.com")
            async with contextlib.AsyncExitStack() as streams:
                for _ in range(SLOTS):
                    await streams.enter_async_context(held_stream(http, f"{base}/events", token))
                waiting = asyncio.ensure_future(http.get(f"{base}/health", timeout=30))
                done, _ = await asyncio.wait({waiting}, timeout=1.5)
                assert not done, "served while every slot was held by a stream"

                await streams.aclose()  # the streams end: their slots free up
                response = await asyncio.wait_for(waiting, 10)

            assert response.status_code == 200

"""The API's background loops (the outbox relay, the periodic chores) stop when asked, however
the stop falls against their own work: a shutdown that waits on them must never hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from stockroom.domain.models import OutboxMessage
from stockroom.domain.ports import ClaimedBatch
from stockroom.pipeline.periodic import Periodic
from stockroom.pipeline.relay import OutboxRelay


class NothingToClaim:
    def __init__(self) -> None:
        self.claims = 0

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[ClaimedBatch]:
        self.claims += 1
        yield ClaimedBatch([])


class SwallowsCancellation:
    """A claim whose library turns a cancellation into an ordinary error, as database drivers
    caught mid-rollback can."""

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[ClaimedBatch]:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            raise RuntimeError("connection was closed in the middle of operation") from None
        yield ClaimedBatch([])


class Unused:
    async def publish(self, message: OutboxMessage) -> None:
        raise AssertionError("nothing was claimed")

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def ends_within(stop: Coroutine[Any, Any, None], seconds: float) -> bool:
    """Whether `stop` returns within `seconds`. It runs as a task of its own, waited on with
    asyncio.wait, which never cancels it: a timeout here must not be the second cancellation
    that rescues a stop which would otherwise hang."""
    stopping = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    return stopping in done


@pytest.mark.parametrize("turns", range(4))
async def test_the_relay_stops_when_woken_just_before(turns: int) -> None:
    """A wake-up that completes its wait in the same few loop turns as the stop: Python 3.11's
    `asyncio.wait_for` returned the wait's result then and dropped the cancellation."""
    claims = NothingToClaim()
    relay = OutboxRelay(claims, Unused(), poll_seconds=0.05)
    relay.start()
    while claims.claims == 0:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # now in its wait

    relay.wake()
    for _ in range(turns):
        await asyncio.sleep(0)
    assert await ends_within(relay.stop(), 2)


async def test_the_relay_stops_when_its_claim_turns_the_cancellation_into_an_error() -> None:
    relay = OutboxRelay(SwallowsCancellation(), Unused(), poll_seconds=0.01)
    relay.start()
    await asyncio.sleep(0.005)  # inside the claim

    assert await ends_within(relay.stop(), 2)


async def test_a_chore_stops_when_it_turns_the_cancellation_into_an_error() -> None:
    started = asyncio.Event()

    async def chore() -> None:
        started.set()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            raise RuntimeError("driver error") from None

    periodic = Periodic("chore", 0.001, chore)
    periodic.start()
    await started.wait()

    assert await ends_within(periodic.stop(), 2)

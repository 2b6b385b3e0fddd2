"""The in-process live hub: fan-out by user, replay from Last-Event-ID without gap or
duplicate, the 15-minute window on a fake clock, slow subscribers dropped, close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from prometheus_client import REGISTRY

from stockroom.adapters.live import LiveOptions, MemoryLiveHub, RedisLiveHub, build_live_hub
from stockroom.adapters.live.subscription import BufferedSubscription, Entry
from stockroom.domain.live import (
    EventId,
    LiveEvent,
    LiveStatusUnavailable,
    StreamedEvent,
    format_event_id,
    parse_event_id,
)

ALICE, BOB = 1, 2


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def hub(clock: FakeClock) -> AsyncIterator[MemoryLiveHub]:
    live = MemoryLiveHub(LiveOptions(buffer_size=8, replay_page_size=2, clock=clock))
    yield live
    await live.close()


def job(user_id: int, n: int) -> LiveEvent:
    return LiveEvent(user_id, "job", b'{"n":%d}' % n)


def event_ids(events: list[StreamedEvent]) -> list[EventId]:
    found = [parse_event_id(event.id) for event in events]
    assert None not in found
    return [event_id for event_id in found if event_id is not None]


def numbers(events: list[StreamedEvent]) -> list[int]:
    return [int(event.data.split(b":")[1].rstrip(b"}")) for event in events]


async def take(events: AsyncIterator[StreamedEvent], count: int) -> list[StreamedEvent]:
    async with asyncio.timeout(2):
        return [await anext(events) for _ in range(count)]


async def nothing_within(events: AsyncIterator[StreamedEvent], seconds: float = 0.05) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await anext(events)
    except TimeoutError:
        return True
    return False


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_every_stream_of_a_user_gets_each_event_and_other_users_none(
    hub: MemoryLiveHub,
) -> None:
    async with (
        hub.subscribe(ALICE) as first,
        hub.subscribe(ALICE) as second,
        hub.subscribe(BOB) as bob,
    ):
        await hub.publish(job(ALICE, 1))
        await hub.publish(LiveEvent(ALICE, "image", b'{"n":2}'))
        got = await take(first, 2)
        assert got == await take(second, 2)
        assert [(event.kind, event.data) for event in got] == [
            ("job", b'{"n":1}'),
            ("image", b'{"n":2}'),
        ]
        first_id, second_id = event_ids(got)
        assert first_id < second_id
        assert await nothing_within(bob)


async def test_a_new_stream_without_last_event_id_starts_with_what_comes_next(
    hub: MemoryLiveHub,
) -> None:
    await hub.publish(job(ALICE, 1))
    async with hub.subscribe(ALICE) as events:
        assert await nothing_within(events)
        await hub.publish(job(ALICE, 2))
        assert numbers(await take(events, 1)) == [2]


async def test_a_wait_with_a_time_limit_is_empty_when_idle_and_ends_with_the_stream(
    hub: MemoryLiveHub,
) -> None:
    async with hub.subscribe(ALICE) as events:
        assert await events.next_within(0.01) is None  # idle: time for a heartbeat
        await hub.publish(job(ALICE, 1))
        got = await events.next_within(1)
        assert got is not None
        assert numbers([got]) == [1]
        waiting = asyncio.ensure_future(events.next_within(5))
        await asyncio.sleep(0)
        await hub.publish(job(ALICE, 2))
        woken = await asyncio.wait_for(waiting, 1)
        assert woken is not None
        assert numbers([woken]) == [2]
        events.end()
        with pytest.raises(StopAsyncIteration):
            await events.next_within(1)


async def test_last_event_id_replays_what_was_missed_then_goes_live_without_gap_or_duplicate(
    hub: MemoryLiveHub,
) -> None:
    async with hub.subscribe(ALICE) as events:
        await hub.publish(job(ALICE, 1))
        seen = await take(events, 1)
    for n in range(2, 7):  # missed while disconnected; more than one replay page (2)
        await hub.publish(job(ALICE, n))
    async with hub.subscribe(ALICE, seen[-1].id) as events:
        await hub.publish(job(ALICE, 7))  # live before the replay is read: buffered
        first = await take(events, 3)
        await hub.publish(job(ALICE, 8))  # live in the middle of the replay
        rest = await take(events, 4)
        assert numbers(first + rest) == [2, 3, 4, 5, 6, 7, 8]
        assert await nothing_within(events)


async def test_replay_covers_only_the_last_15_minutes(hub: MemoryLiveHub, clock: FakeClock) -> None:
    await hub.publish(job(ALICE, 1))
    clock.now += 14 * 60
    await hub.publish(job(ALICE, 2))
    clock.now += 2 * 60  # the first is now 16 minutes old, the second 2
    async with hub.subscribe(ALICE, "0-0") as events:
        assert numbers(await take(events, 1)) == [2]
        assert await nothing_within(events)


async def test_a_user_idle_for_the_window_is_forgotten(
    hub: MemoryLiveHub, clock: FakeClock
) -> None:
    await hub.publish(job(ALICE, 1))
    clock.now += 16 * 60
    await hub.publish(job(BOB, 1))
    async with hub.subscribe(ALICE, "0-0") as events:
        assert await nothing_within(events)


async def test_ids_keep_growing_when_the_clock_steps_back(
    hub: MemoryLiveHub, clock: FakeClock
) -> None:
    async with hub.subscribe(ALICE) as events:
        await hub.publish(job(ALICE, 1))
        clock.now -= 5
        await hub.publish(job(ALICE, 2))
        await hub.publish(job(ALICE, 3))
        ids = event_ids(await take(events, 3))
    assert ids == sorted(ids)
    assert len(set(ids)) == 3


async def test_a_slow_stream_is_dropped_without_holding_back_the_others(
    hub: MemoryLiveHub,
) -> None:
    dropped_before = metric("stockroom_sse_clients_dropped_total", reason="buffer_full")
    async with hub.subscribe(ALICE) as slow, hub.subscribe(ALICE) as fast:
        received: list[StreamedEvent] = []

        async def read_fast() -> None:
            received.extend(await take(fast, 20))

        reader = asyncio.create_task(read_fast())
        for n in range(20):  # the slow one reads nothing: its buffer holds 8
            await hub.publish(job(ALICE, n))
            await asyncio.sleep(0)  # let the fast one read as it would over a socket
        await reader
        assert numbers(received) == list(range(20))
        with pytest.raises(StopAsyncIteration):
            await anext(slow)  # ended, its buffer freed: the client reconnects
    assert metric("stockroom_sse_clients_dropped_total", reason="buffer_full") == dropped_before + 1


async def test_a_dropped_client_resumes_from_its_last_event(hub: MemoryLiveHub) -> None:
    async with hub.subscribe(ALICE) as slow:
        await hub.publish(job(ALICE, 0))
        seen = await take(slow, 1)
        for n in range(1, 12):
            await hub.publish(job(ALICE, n))
        assert [event async for event in slow] == []
    async with hub.subscribe(ALICE, seen[-1].id) as events:
        assert numbers(await take(events, 11)) == list(range(1, 12))


async def test_close_ends_every_stream_and_refuses_new_ones(hub: MemoryLiveHub) -> None:
    async with hub.subscribe(ALICE) as events:
        waiting = asyncio.create_task(take(events, 1))
        await asyncio.sleep(0)
        await hub.close()
        with pytest.raises(StopAsyncIteration):
            await waiting
    with pytest.raises(LiveStatusUnavailable):
        async with hub.subscribe(ALICE):
            pass
    await hub.publish(job(ALICE, 1))  # still never raises
    with pytest.raises(LiveStatusUnavailable):
        await hub.ping()


async def test_open_streams_are_counted(hub: MemoryLiveHub) -> None:
    before = metric("stockroom_sse_streams_open")
    async with hub.subscribe(ALICE), hub.subscribe(BOB):
        assert metric("stockroom_sse_streams_open") == before + 2
    assert metric("stockroom_sse_streams_open") == before


async def test_a_last_event_id_that_is_not_ours_means_no_replay(hub: MemoryLiveHub) -> None:
    await hub.publish(job(ALICE, 1))
    async with hub.subscribe(ALICE, "not-an-id") as events:
        assert await nothing_within(events)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("1700000000000-0", (1_700_000_000_000, 0)),
        (" 5-12 ", (5, 12)),
        ("5", None),
        ("a-1", None),
        ("1-2-3", None),
        ("", None),
        (None, None),
        ("9" * 16 + "-0", None),
    ],
)
def test_event_ids_are_parsed_strictly(value: str | None, parsed: tuple[int, int] | None) -> None:
    assert parse_event_id(value) == parsed
    if parsed is not None:
        assert parse_event_id(format_event_id(parsed)) == parsed


async def test_the_hub_is_chosen_by_url_scheme() -> None:
    memory = build_live_hub("memory://")
    redis = build_live_hub("redis://127.0.0.1:6379/0")
    secure = build_live_hub("rediss://127.0.0.1:6380/0")
    try:
        assert isinstance(memory, MemoryLiveHub)
        assert isinstance(redis, RedisLiveHub)
        assert isinstance(secure, RedisLiveHub)
    finally:
        for hub in (memory, redis, secure):
            await hub.close()
    with pytest.raises(ValueError, match="unsupported live-status URL scheme"):
        build_live_hub("amqp://localhost")


@pytest.mark.parametrize(
    "bad",
    [
        {"buffer_size": 0},
        {"window_seconds": 0},
        {"max_events_per_user": 0},
        {"replay_page_size": 0},
        {"socket_timeout": 0},
        {"subscribe_timeout": -1},
        {"ping_interval": 0},
    ],
)
def test_options_refuse_empty_bounds(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LiveOptions(**bad)  # type: ignore[arg-type]


async def test_a_stream_whose_catch_up_fails_ends_rather_than_skip_events() -> None:
    async def unavailable(after: EventId) -> Sequence[Entry]:
        raise LiveStatusUnavailable("redis replay failed")

    subscription = BufferedSubscription(
        ALICE, (0, 0), capacity=4, catch_up=unavailable, page_size=10
    )
    subscription.offer(((5, 0), StreamedEvent("5-0", "job", b"{}")))  # live, after a gap
    assert [event async for event in subscription] == []

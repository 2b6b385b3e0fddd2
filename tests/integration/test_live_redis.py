"""The Redis live hub on the real server: two hubs stand for two API processes. An event
published on one reaches the other's streams, resuming misses nothing, a lost connection is
caught up, and an unreachable Redis never makes `publish` raise.

Each test has its own key prefix (its streams and channels) and deletes its keys."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import REDIS_URL, free_port
from tests.support.tcp_proxy import TcpProxy

from stockroom.adapters.live import LiveOptions, RedisLiveHub
from stockroom.domain.live import (
    EventId,
    LiveEvent,
    LiveStatusUnavailable,
    StreamedEvent,
    parse_event_id,
)

pytestmark = pytest.mark.redis

ALICE, BOB = 1, 2
HubFactory = Callable[..., RedisLiveHub]


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = require_redis()
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: Redis) -> AsyncIterator[str]:
    value = unique_prefix()
    yield value
    await delete_prefix(redis_client, value)


@pytest.fixture
async def make_hub(prefix: str) -> AsyncIterator[HubFactory]:
    """Hubs on the test Redis (or `url`) under this test's prefix, closed at the end."""
    hubs: list[RedisLiveHub] = []

    def make(url: str = REDIS_URL, **options: object) -> RedisLiveHub:
        values: dict[str, object] = {"key_prefix": prefix, "socket_timeout": 2.0, **options}
        hub = RedisLiveHub.from_url(url, LiveOptions(**values))  # type: ignore[arg-type]
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.close()


def job(user_id: int, n: int) -> LiveEvent:
    return LiveEvent(user_id, "job", b'{"n":%d}' % n)


def event_ids(events: list[StreamedEvent]) -> list[EventId]:
    found = [parse_event_id(event.id) for event in events]
    assert None not in found
    return [event_id for event_id in found if event_id is not None]


def numbers(events: list[StreamedEvent]) -> list[int]:
    return [int(event.data.split(b":")[1].rstrip(b"}")) for event in events]


async def take(
    events: AsyncIterator[StreamedEvent], count: int, timeout: float = 5
) -> list[StreamedEvent]:
    async with asyncio.timeout(timeout):
        return [await anext(events) for _ in range(count)]


async def nothing_within(events: AsyncIterator[StreamedEvent], seconds: float = 0.2) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await anext(events)
    except TimeoutError:
        return True
    return False


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_an_event_published_on_one_instance_reaches_streams_on_another(
    make_hub: HubFactory,
) -> None:
    api_a, api_b = make_hub(), make_hub()
    async with (
        api_a.subscribe(ALICE) as on_a,
        api_b.subscribe(ALICE) as on_b,
        api_a.subscribe(BOB) as bob,
    ):
        await api_b.publish(job(ALICE, 1))
        await api_b.publish(LiveEvent(ALICE, "import", b'{"n":2}'))
        got = await take(on_a, 2)
        assert got == await take(on_b, 2)
        assert [(event.kind, event.data) for event in got] == [
            ("job", b'{"n":1}'),
            ("import", b'{"n":2}'),
        ]
        assert await nothing_within(bob)


async def test_resuming_with_last_event_id_misses_nothing_and_repeats_nothing(
    make_hub: HubFactory,
) -> None:
    api_a, api_b = make_hub(replay_page_size=2), make_hub()
    async with api_a.subscribe(ALICE) as events:
        await api_b.publish(job(ALICE, 1))
        seen = await take(events, 1)
    for n in range(2, 7):
        await api_b.publish(job(ALICE, n))
    async with api_a.subscribe(ALICE, seen[-1].id) as events:
        await api_b.publish(job(ALICE, 7))
        first = await take(events, 3)
        await api_b.publish(job(ALICE, 8))
        rest = await take(events, 4)
        assert numbers(first + rest) == [2, 3, 4, 5, 6, 7, 8]
        assert await nothing_within(events)


async def test_joining_while_events_pour_in_leaves_no_gap_and_no_duplicate(
    make_hub: HubFactory, redis_client: Redis, prefix: str
) -> None:
    """Streams join at arbitrary points of a steady flow, each from some earlier id: each must
    get exactly the stored entries after its id, in order."""
    api_a, api_b = make_hub(replay_page_size=7), make_hub()
    total = 300

    async def publish_all() -> None:
        for n in range(total):
            await api_b.publish(job(ALICE, n))
            await asyncio.sleep(0)

    publisher = asyncio.create_task(publish_all())
    received: dict[int, list[StreamedEvent]] = {}

    async def join(after_n: int) -> None:
        while True:  # wait until entry `after_n` exists, then join from it
            stored = await redis_client.xrange(f"{prefix}events:{ALICE}", "-", "+") or []
            if len(stored) > after_n:
                break
            await asyncio.sleep(0.001)
        after = stored[after_n][0]
        assert isinstance(after, bytes)
        async with api_a.subscribe(ALICE, after.decode()) as events:
            received[after_n] = await take(events, total - after_n - 1, timeout=20)

    await asyncio.gather(publisher, *(join(n) for n in (0, 40, 120, 150)))
    for after_n, events in received.items():
        assert numbers(events) == list(range(after_n + 1, total))
        ids = event_ids(events)
        assert ids == sorted(set(ids))


async def test_events_published_while_the_connection_was_lost_are_caught_up(
    make_hub: HubFactory,
) -> None:
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        behind_proxy = make_hub(proxy.url, breaker_cooldown=0.05)
        direct = make_hub()
        async with behind_proxy.subscribe(ALICE) as events:
            await direct.publish(job(ALICE, 1))
            assert numbers(await take(events, 1)) == [1]
            proxy.set_mode("refuse")  # the reader's pub/sub connection is reset
            await direct.publish(job(ALICE, 2))
            await direct.publish(job(ALICE, 3))
            await asyncio.sleep(0.1)
            proxy.set_mode("forward")
            await direct.publish(job(ALICE, 4))
            assert numbers(await take(events, 3, timeout=10)) == [2, 3, 4]
            assert await nothing_within(events)


async def test_a_connection_that_goes_silent_is_replaced_and_caught_up(
    make_hub: HubFactory,
) -> None:
    """A partition (no reset, no answer): the unanswered PINGs give it away."""
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        behind_proxy = make_hub(proxy.url, socket_timeout=0.2, ping_interval=0.1)
        direct = make_hub()
        async with behind_proxy.subscribe(ALICE) as events:
            await direct.publish(job(ALICE, 1))
            assert numbers(await take(events, 1)) == [1]
            accepted = proxy.connections_accepted
            proxy.set_mode("blackhole")
            await direct.publish(job(ALICE, 2))
            async with asyncio.timeout(5):
                while proxy.connections_accepted == accepted:  # the reader gave up on it
                    await asyncio.sleep(0.01)
            proxy.set_mode("forward")
            await direct.publish(job(ALICE, 3))
            assert numbers(await take(events, 2, timeout=10)) == [2, 3]
            assert await nothing_within(events)


async def test_a_user_leaving_and_coming_straight_back_misses_nothing(
    make_hub: HubFactory,
) -> None:
    """UNSUBSCRIBE then SUBSCRIBE of one channel in flight together: the stream counts as
    subscribed only once the second is answered."""
    api_a, api_b = make_hub(), make_hub()

    async def hold() -> None:
        async with api_a.subscribe(ALICE, "0-0"):
            await asyncio.Event().wait()

    for n in range(30):
        async with api_a.subscribe(ALICE):
            pass  # left after its SUBSCRIBE was answered
        holder = asyncio.create_task(hold())
        for _ in range(n % 3):
            await asyncio.sleep(0)  # cancelled before, or while, its SUBSCRIBE is in flight
        holder.cancel()
        async with api_a.subscribe(ALICE) as events:
            await api_b.publish(job(ALICE, n))
            assert numbers(await take(events, 1)) == [n]
        with contextlib.suppress(asyncio.CancelledError):
            await holder


async def test_publish_never_raises_when_redis_is_down(make_hub: HubFactory) -> None:
    hub = make_hub(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    failures = metric("stockroom_live_publish_failures_total")
    started = time.perf_counter()
    for n in range(5):
        await hub.publish(job(ALICE, n))
    assert metric("stockroom_live_publish_failures_total") == failures + 5
    assert time.perf_counter() - started < 2  # the breaker: one timeout per outage, not per call
    with pytest.raises(LiveStatusUnavailable):
        async with hub.subscribe(ALICE):
            pass
    with pytest.raises(LiveStatusUnavailable):
        await hub.ping()


async def test_subscribing_with_an_unreachable_redis_raises_unavailable(
    make_hub: HubFactory,
) -> None:
    hub = make_hub(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, subscribe_timeout=0.5)
    with pytest.raises(LiveStatusUnavailable):
        async with hub.subscribe(ALICE, "1-0"):  # with an id: no read first, the wait fails
            pass


async def test_a_slow_stream_is_dropped_and_resumes_from_the_stream(make_hub: HubFactory) -> None:
    hub = make_hub(buffer_size=3)
    dropped = metric("stockroom_sse_clients_dropped_total", reason="buffer_full")
    async with hub.subscribe(ALICE) as slow:
        await hub.publish(job(ALICE, 0))
        seen = await take(slow, 1)
        for n in range(1, 10):
            await hub.publish(job(ALICE, n))
        async with asyncio.timeout(5):
            while metric("stockroom_sse_clients_dropped_total", reason="buffer_full") == dropped:
                await asyncio.sleep(0.01)
        assert [event async for event in slow] == []
    async with hub.subscribe(ALICE, seen[-1].id) as events:
        assert numbers(await take(events, 9)) == list(range(1, 10))


async def test_replay_stops_at_the_window_and_streams_expire_with_it(
    make_hub: HubFactory, redis_client: Redis, prefix: str
) -> None:
    hub = make_hub()
    await hub.publish(job(ALICE, 1))
    ttl = await redis_client.pttl(f"{prefix}events:{ALICE}")
    assert 0 < ttl <= 15 * 60 * 1000
    later = make_hub(clock=lambda: time.time() + 16 * 60)  # as if 16 minutes had passed
    async with later.subscribe(ALICE, "0-0") as events:
        assert await nothing_within(events)
    async with hub.subscribe(ALICE, "0-0") as events:
        assert numbers(await take(events, 1)) == [1]


async def test_close_ends_the_streams_and_releases_the_connections(make_hub: HubFactory) -> None:
    hub = make_hub()
    async with hub.subscribe(ALICE) as events:
        waiting = asyncio.create_task(take(events, 1))
        await asyncio.sleep(0.05)
        await hub.close()
        with pytest.raises(StopAsyncIteration):
            await waiting
    await hub.publish(job(ALICE, 1))  # a closed hub drops quietly

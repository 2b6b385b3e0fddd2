"""The near-cache's rules, on a scripted Redis cache and listener (Redis itself: the
integration tests in tests/integration/test_near_cache.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, cast

import pytest

from stockroom.adapters.cache.invalidations import RespReader, encode_command
from stockroom.adapters.cache.near import PRODUCT_KEYS, TOKEN_KEYS, NearCache
from stockroom.adapters.cache.redis import RedisCache
from stockroom.domain.ports import CachedProduct


class ScriptedRedis:
    """Stands in for RedisCache: a dict of bodies; `pause` holds reads mid-flight."""

    def __init__(self) -> None:
        self.bodies: dict[int | str, bytes] = {}
        self.reads = 0
        self.pause: asyncio.Event | None = None
        self.read_started = asyncio.Event()
        self.lost_invalidations: frozenset[int | str] = frozenset()

    async def read(self, key: int | str) -> CachedProduct:
        self.reads += 1
        body = self.bodies.get(key)
        self.read_started.set()
        if self.pause is not None:
            await self.pause.wait()
        return CachedProduct(body, "0.1")

    async def fill(self, key: int | str, body: bytes, token: str | None) -> None:
        self.bodies[key] = body

    async def invalidate(self, key: int | str) -> None:
        self.bodies.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class ScriptedListener:
    def __init__(self, on_message: Callable[[bytes], None], on_flush: Callable[[], None]) -> None:
        self.on_message = on_message
        self.on_flush = on_flush
        self.healthy = True
        self.pending: list[bytes] = []
        self.started = False
        self.expected: list[bytes] = []

    def start(self) -> None:
        self.started = True

    def expect(self, payload: bytes) -> asyncio.Future[None]:
        self.expected.append(payload)
        echo: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        echo.set_result(None)  # delivered at once
        return echo

    def forget(self, payload: bytes, future: asyncio.Future[None]) -> None:
        return None

    def drain(self) -> None:
        pending, self.pending = self.pending, []
        for payload in pending:
            self.on_message(payload)

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_near(
    redis: ScriptedRedis,
    clock: Clock | None = None,
    max_entries: int = 100,
    keys: re.Pattern[str] = PRODUCT_KEYS,
) -> tuple[NearCache, ScriptedListener]:
    made: list[ScriptedListener] = []

    def factory(on_message: Callable[[bytes], None], on_flush: Callable[[], None]) -> Any:
        made.append(ScriptedListener(on_message, on_flush))
        return made[-1]

    near = NearCache(
        cast(RedisCache, redis),
        factory,
        ttl_seconds=60,
        max_entries=max_entries,
        keys=keys,
        clock=clock or Clock(),
    )
    return near, made[0]


async def test_a_body_read_from_redis_is_then_served_from_memory() -> None:
    redis = ScriptedRedis()
    redis.bodies[1] = b"v1"
    near, _ = make_near(redis)

    assert (await near.read(1)).body == b"v1"
    assert (await near.read(1)).body == b"v1"
    assert redis.reads == 1


async def test_an_invalidation_message_from_another_process_is_applied_before_the_next_hit() -> (
    None
):
    redis = ScriptedRedis()
    redis.bodies[1] = b"v1"
    near, listener = make_near(redis)
    await near.read(1)

    redis.bodies[1] = b"v2"  # another process wrote, invalidated and refilled Redis ...
    listener.pending.append(b"1")  # ... and its message is in our socket, not yet read

    assert (await near.read(1)).body == b"v2"


async def test_own_invalidation_drops_the_entry_at_once() -> None:
    redis = ScriptedRedis()
    redis.bodies[1] = b"v1"
    near, _ = make_near(redis)
    await near.read(1)

    await near.invalidate(1)

    assert (await near.read(1)).body is None
    assert len(near) == 0


async def test_a_cache_that_only_writes_subscribes_and_waits_for_its_echo() -> None:
    """A worker, or an API process with STOCKROOM_CACHE_PRODUCTS=false, never reads: its
    invalidations must still wait until every subscriber's socket holds the message."""
    near, listener = make_near(ScriptedRedis())

    await near.invalidate(1)

    assert listener.started
    assert listener.expected == [b"1"]


async def test_a_body_in_flight_when_an_invalidation_arrives_is_not_kept() -> None:
    """The reader fetched the old body from Redis before the write; the write's message
    arrives before that reply is handled: the old body must not be stored."""
    redis = ScriptedRedis()
    redis.bodies[1] = b"old"
    near, listener = make_near(redis)
    redis.pause = asyncio.Event()

    reading = asyncio.create_task(near.read(1))
    await redis.read_started.wait()
    listener.on_message(b"1")  # the invalidation, handled by the loop's reader callback
    redis.pause.set()
    assert (await reading).body == b"old"  # this answer was already on its way

    redis.pause = None
    redis.bodies[1] = b"new"
    assert (await near.read(1)).body == b"new"


async def test_a_flush_message_drops_everything() -> None:
    redis = ScriptedRedis()
    redis.bodies.update({1: b"a", 2: b"b"})
    near, listener = make_near(redis)
    await near.read(1)
    await near.read(2)

    listener.on_message(b"*")

    assert len(near) == 0


async def test_nothing_is_served_or_kept_while_the_subscription_is_down() -> None:
    redis = ScriptedRedis()
    redis.bodies[1] = b"v1"
    near, listener = make_near(redis)
    await near.read(1)

    listener.healthy = False
    listener.on_flush()
    redis.bodies[1] = b"v2"

    assert (await near.read(1)).body == b"v2"
    assert (await near.read(1)).body == b"v2"
    assert redis.reads == 3
    assert len(near) == 0


async def test_entries_expire_and_the_bound_evicts_the_least_recently_used() -> None:
    redis = ScriptedRedis()
    redis.bodies.update({1: b"a", 2: b"b", 3: b"c"})
    clock = Clock()
    near, _ = make_near(redis, clock, max_entries=2)
    await near.read(1)
    await near.read(2)
    await near.read(1)  # 1 is now the most recently used
    await near.read(3)  # evicts 2

    assert len(near) == 2
    reads = redis.reads
    await near.read(1)
    assert redis.reads == reads
    await near.read(2)
    assert redis.reads == reads + 1

    clock.now += 61
    await near.read(1)
    assert redis.reads == reads + 2


def test_resp_reader_parses_messages_split_anywhere() -> None:
    stream = (
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nchan\r\n:1\r\n"
        b"*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$2\r\n42\r\n"
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        b"-ERR wrong\r\n"
    )
    expected = [
        [b"subscribe", b"chan", 1],
        [b"message", b"chan", b"42"],
        [b"pong", b""],
    ]
    for cut in range(1, len(stream)):
        reader = RespReader()
        reader.feed(stream[:cut])
        values = reader.values()
        reader.feed(stream[cut:])
        values += reader.values()
        assert values[:3] == expected
        assert str(values[3]) == "ERR wrong"


def test_encode_command_is_resp() -> None:
    assert encode_command("SUBSCRIBE", b"c") == b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n"


@pytest.mark.parametrize("payload", [b"not-a-number", b""])
async def test_an_unreadable_message_drops_everything(payload: bytes) -> None:
    redis = ScriptedRedis()
    redis.bodies[1] = b"v1"
    near, listener = make_near(redis)
    await near.read(1)

    listener.on_message(payload)

    assert len(near) == 0


HASH_A, HASH_B = "a" * 64, "b" * 64


async def test_a_token_near_cache_drops_only_the_hash_named_by_a_message() -> None:
    redis = ScriptedRedis()
    redis.bodies.update({HASH_A: b"alice", HASH_B: b"bob"})
    near, listener = make_near(redis, keys=TOKEN_KEYS)
    await near.read(HASH_A)
    await near.read(HASH_B)

    listener.pending.append(HASH_A.encode())
    redis.bodies[HASH_A] = b"alice, renamed"

    assert (await near.read(HASH_A)).body == b"alice, renamed"
    reads = redis.reads
    assert (await near.read(HASH_B)).body == b"bob"  # still from memory
    assert redis.reads == reads


async def test_a_product_id_on_a_token_channel_drops_everything() -> None:
    redis = ScriptedRedis()
    redis.bodies[HASH_A] = b"alice"
    near, listener = make_near(redis, keys=TOKEN_KEYS)
    await near.read(HASH_A)

    listener.on_message(b"42")

    assert len(near) == 0

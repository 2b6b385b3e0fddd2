"""The near-cache on a real Redis: two caches with their own connections stand for two
processes; one of them reaches Redis through a TCP proxy to cut its subscription."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme
from redis.asyncio import Redis
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import REDIS_URL
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

from stockroom.adapters.cache import CacheOptions, NearCache, build_product_cache
from stockroom.adapters.cache.invalidations import PING_INTERVAL_SECONDS

pytestmark = pytest.mark.redis

SOCKET_TIMEOUT = 0.2


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    client: Redis = require_redis()
    name = unique_prefix()
    yield name
    await delete_prefix(client, name)
    await client.aclose()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    target = urlsplit(REDIS_URL)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as running:
        yield running


@pytest.fixture
async def make_cache(prefix: str) -> AsyncIterator[Callable[[str], NearCache]]:
    made: list[NearCache] = []

    def make(url: str) -> NearCache:
        cache = build_product_cache(
            url,
            CacheOptions(
                ttl_seconds=60,
                socket_timeout=SOCKET_TIMEOUT,
                breaker_cooldown=0.3,
                key_prefix=prefix,
                near_max_entries=100,
            ),
        )
        assert isinstance(cache, NearCache)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


async def _cached_near(cache: NearCache, product_id: int, body: bytes) -> None:
    """Read until the body is held in memory (the subscription confirms asynchronously)."""

    async def held() -> bool:
        return (await cache.read(product_id)).body == body and len(cache) > 0

    await eventually(held, timeout=5, interval=0.01)


async def test_an_invalidation_by_one_process_is_seen_by_the_next_read_of_the_other(
    make_cache: Callable[[str], NearCache],
) -> None:
    writer, reader = make_cache(REDIS_URL), make_cache(REDIS_URL)
    for round_ in range(50):
        body = f"v{round_}".encode()
        token = (await writer.read(1)).token
        await writer.fill(1, body, token)
        await _cached_near(reader, 1, body)

        await writer.invalidate(1)

        # At once: no sleep between the writer's invalidation and the other's read.
        assert (await reader.read(1)).body is None, f"round {round_}: stale near-cache hit"


async def test_an_epoch_bump_empties_every_near_cache(
    make_cache: Callable[[str], NearCache], prefix: str
) -> None:
    writer, reader = make_cache(REDIS_URL), make_cache(REDIS_URL)
    await writer.fill(1, b"v1", (await writer.read(1)).token)
    await _cached_near(reader, 1, b"v1")

    client: Redis = require_redis()
    # What RedisCache does after an outage that lost invalidations.
    await client.eval(
        "local e = redis.call('INCR', KEYS[1]); redis.call('PUBLISH', ARGV[1], '*'); return e",
        1,
        f"{prefix}epoch",
        f"{prefix}invalidations",
    )
    await client.aclose()

    assert (await reader.read(1)).body is None


async def test_a_cut_subscription_stops_the_near_cache_and_nothing_stale_follows_recovery(
    make_cache: Callable[[str], NearCache], proxy: TcpProxy
) -> None:
    writer = make_cache(REDIS_URL)
    reader = make_cache(proxy.url)  # this one's data and subscription go through the proxy
    await writer.fill(1, b"old", (await writer.read(1)).token)
    await _cached_near(reader, 1, b"old")

    proxy.set_mode("refuse")
    await writer.invalidate(1)  # the message cannot reach the reader ...
    await writer.fill(1, b"new", (await writer.read(1)).token)

    # ... whose subscription is gone, so it serves nothing from memory (Redis is cut too).
    assert (await reader.read(1)).body is None
    assert len(reader) == 0

    proxy.set_mode("forward")
    await _cached_near(reader, 1, b"new")


async def test_a_blackholed_subscription_is_noticed_by_its_ping(
    make_cache: Callable[[str], NearCache], proxy: TcpProxy
) -> None:
    reader = make_cache(proxy.url)
    writer = make_cache(REDIS_URL)
    await writer.fill(1, b"old", (await writer.read(1)).token)
    await _cached_near(reader, 1, b"old")

    proxy.set_mode("blackhole")  # connections stay open, nothing is answered

    async def dropped() -> bool:
        await reader.read(1)
        return len(reader) == 0

    # Unnoticed until a PING goes unanswered (about a second plus the socket timeout).
    await eventually(dropped, timeout=5, interval=0.05)
    assert (await reader.read(1)).body is None  # not from memory, and Redis is unreachable


async def test_an_idle_subscription_stays_up_across_its_pings(
    make_cache: Callable[[str], NearCache],
) -> None:
    """Redis answers a subscribed PING with +PONG under RESP3 (redis-py 8's default), where
    RESP2 sent ["pong", ""]: taking one for no answer reconnected (and flushed) every 2 s."""
    cache = make_cache(REDIS_URL)
    writer = make_cache(REDIS_URL)
    await writer.fill(1, b"kept", (await writer.read(1)).token)
    await _cached_near(cache, 1, b"kept")

    await asyncio.sleep(4.5 * PING_INTERVAL_SECONDS)  # several PINGs, and their deadlines

    assert len(cache) == 1  # never flushed: the subscription was never dropped


@pytest.fixture
async def tls_redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """A `rediss://` URL: a TLS-terminating proxy in front of the test Redis.

    The proxy is one more hop for the messages, so what arrives through it arrives later
    than at a direct subscriber: the test waits for the invalidation instead of expecting it
    at once (Redis's own TLS has no such hop)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    target = urlsplit(REDIS_URL)
    pipes: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            target.hostname or "127.0.0.1", target.port or 6379
        )
        writers.extend((writer, up_writer))
        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            pipes.add(asyncio.create_task(task))

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    yield f"rediss://localhost:{port}/0?ssl_ca_certs={ca_file}"
    server.close()
    for task in pipes:
        task.cancel()
    await asyncio.gather(*pipes, return_exceptions=True)
    for writer in writers:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    await server.wait_closed()


async def test_the_near_cache_subscribes_over_tls(
    make_cache: Callable[[str], NearCache], tls_redis_url: str
) -> None:
    writer, reader = make_cache(REDIS_URL), make_cache(tls_redis_url)

    async def dropped() -> bool:
        return (await reader.read(1)).body is None

    for round_ in range(10):
        body = f"v{round_}".encode()
        await writer.fill(1, body, (await writer.read(1)).token)
        await _cached_near(reader, 1, body)  # held in memory: the subscription is confirmed

        await writer.invalidate(1)

        await eventually(dropped, timeout=5, interval=0.01)

"""One contract for the `TokenCache`: the same assertions on memory, Redis and Redis with a
near-cache, keyed by whole token hashes, with the generation guard that makes revocation
immediate on every instance."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from tests.support.redis_server import delete_prefix, require_redis, unique_prefix
from tests.support.services import REDIS_URL
from tests.unit.fakes import FakeDatabase

from stockroom.adapters.cache import CacheOptions, KeyedCache, build_token_cache
from stockroom.domain import users
from stockroom.domain.errors import InvalidToken
from stockroom.domain.events import DomainEvent, TokenRevoked
from stockroom.domain.ports import TokenCache

# Two hashes alike in their first 63 bits, which the old integer key could not tell apart.
HASH_A = "0123456789abcdef" + "a" * 48
HASH_B = "0123456789abcdef" + "b" * 48

Instances = Callable[[], KeyedCache]
"""Builds one more instance on the same shared cache (another process)."""


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-near", marks=pytest.mark.redis),
    ]
)
async def instances(request: pytest.FixtureRequest) -> AsyncIterator[Instances]:
    if request.param == "memory":
        shared = build_token_cache(
            "memory://", CacheOptions(ttl_seconds=60, socket_timeout=1, breaker_cooldown=1)
        )
        yield lambda: shared
        return
    admin = require_redis()
    prefix = unique_prefix()
    options = CacheOptions(
        ttl_seconds=60,
        socket_timeout=2.0,
        breaker_cooldown=5.0,
        key_prefix=prefix,
        near_max_entries=100 if request.param == "redis-near" else 0,
    )
    made: list[KeyedCache] = []

    def instance() -> KeyedCache:
        made.append(build_token_cache(REDIS_URL, options))
        return made[-1]

    try:
        yield instance
    finally:
        for cache in made:
            await cache.close()
        await delete_prefix(admin, prefix)
        await admin.aclose()


async def test_a_fill_from_before_an_invalidation_is_refused(instances: Instances) -> None:
    cache: TokenCache = instances()
    stale = await cache.read(HASH_A)  # an instance looks the token up in the database...
    await cache.invalidate(HASH_A)  # ...the token is revoked...
    await cache.fill(HASH_A, b"revoked user", stale.token)  # ...then the lookup lands

    fresh = await cache.read(HASH_A)
    assert fresh.body is None
    await cache.fill(HASH_A, b"user", fresh.token)
    assert (await cache.read(HASH_A)).body == b"user"


async def test_hashes_are_whole_keys(instances: Instances) -> None:
    cache: TokenCache = instances()
    for token_hash, body in ((HASH_A, b"alice"), (HASH_B, b"bob")):
        await cache.fill(token_hash, body, (await cache.read(token_hash)).token)

    await cache.invalidate(HASH_A)

    assert (await cache.read(HASH_A)).body is None
    assert (await cache.read(HASH_B)).body == b"bob"


async def test_a_revocation_on_one_instance_stops_the_token_on_another_at_once(
    instances: Instances,
) -> None:
    db = FakeDatabase()
    api_one, api_two = instances(), instances()
    user, issued = await users.create_user(db.uow(), email="a@example.com")
    for _ in range(3):  # cached on the first lookup (and, with a near-cache, kept in memory)
        assert await users.authenticate(db.lookups(), issued.secret, api_one) == user
    cached = await api_one.read(users.token_cache_key(users.hash_token(issued.secret)))
    assert cached.body is not None

    async def api_two_effects(events: Sequence[DomainEvent]) -> None:
        """API two revokes: what its effects do to the token cache, API one must see."""
        for event in events:
            if isinstance(event, TokenRevoked):
                await api_two.invalidate(event.token_hash)

    db.effects = api_two_effects
    await users.revoke_token(db.uow(), user, issued.token.id)

    with pytest.raises(InvalidToken):
        await users.authenticate(db.lookups(), issued.secret, api_one)


@pytest.mark.redis
async def test_token_entries_live_under_their_own_namespace() -> None:
    admin = require_redis()
    prefix = unique_prefix()
    options = CacheOptions(
        ttl_seconds=60, socket_timeout=2.0, breaker_cooldown=5.0, key_prefix=prefix
    )
    cache = build_token_cache(REDIS_URL, options)
    try:
        await cache.fill(HASH_A, b"alice", (await cache.read(HASH_A)).token)
        assert await admin.get(f"{prefix}token:0:{HASH_A}") == b"alice"
    finally:
        await cache.close()
        await delete_prefix(admin, prefix)
        await admin.aclose()

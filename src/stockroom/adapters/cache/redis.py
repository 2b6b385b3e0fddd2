"""The cache on Redis: cache-aside with generation tokens, a circuit breaker and an epoch.

Keys (under `key_prefix`, one per cache): `{namespace}:{epoch}:{key}` holds the body (namespace
`product` or `token`), `gen:{key}` the generation last given to the key (fresh values from the
global `generation` counter, so a generation never repeats even after `gen:{key}` expires), and
`epoch` is bumped to orphan every body at once. A key is any string (`str(product_id)`, a token
hash); it is published as is on invalidation, so it must not be `*`.
A token is `"{epoch}.{generation}"`; `fill` stores only while both still match, atomically in Lua,
so a row read before a write can never be cached after that write's invalidation.

Outages: any Redis error or timeout opens the breaker and degrades to a miss; invalidations that
did not reach Redis are remembered, and the first successful call afterwards bumps `epoch`
before anything else, so nothing cached before the outage is served again (and tokens handed out
before it cannot fill). Other instances notice the new epoch in their next read's MGET. A
process that has nothing else to ask Redis (a worker between jobs) makes that call itself: a
background task retries the bump every breaker cooldown until it lands.
Remaining gap, bounded by the body TTL: a process that dies before Redis returns never bumps,
and other instances keep serving the entries it failed to invalidate.
Needs a standalone or Sentinel Redis (the scripts touch keys in several slots), with an
eviction policy that spares keys without TTL (`noeviction` or `volatile-*`): `epoch` must not be
evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from stockroom.adapters.cache.breaker import CircuitBreaker
from stockroom.adapters.cache.keyed import Key
from stockroom.adapters.cache.metrics import CACHE_BREAKER_OPEN, CACHE_ERRORS, CACHE_REQUESTS
from stockroom.adapters.cache.options import CacheOptions
from stockroom.adapters.redis_pool import fail_fast_pool
from stockroom.background import cancel_requested, stop_task
from stockroom.domain.errors import CacheUnavailable
from stockroom.domain.ports import CachedProduct

GENERATION_TTL_SECONDS = 86_400
"""How long `gen:{key}` outlives its last invalidation; must exceed any read-to-fill delay."""

# KEYS: body (token's epoch), gen:{key}, epoch. ARGV: generation, epoch, body, ttl.
_FILL_LUA = """
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[2] then return 0 end
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
return 1
"""

# KEYS: epoch, generation counter, gen:{key}. ARGV: body key prefix, key, generation ttl,
# invalidation channel. The body key is built here from the live epoch, so a stale in-memory
# epoch cannot miss it; the key is published for the near-caches of every process.
_INVALIDATE_LUA = """
local epoch = redis.call('GET', KEYS[1]) or '0'
local generation = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], generation, 'EX', ARGV[3])
redis.call('DEL', ARGV[1] .. epoch .. ':' .. ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return epoch
"""

# KEYS: epoch. ARGV: invalidation channel. Every near-cache drops everything ("*").
_BUMP_EPOCH_LUA = """
local epoch = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], '*')
return epoch
"""


def _logger() -> structlog.typing.FilteringBoundLogger:
    """A fresh logger per (rare) event, so it follows the logging config of the moment."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)
    return logger


def _text(value: bytes | str | None) -> str:
    if value is None:
        return "0"
    return value.decode() if isinstance(value, bytes) else value


MAX_CONNECTIONS = 64  # per process; more than one event loop keeps busy


class RedisCache:
    """The production cache; every method degrades to a miss or a no-op on failure."""

    def __init__(
        self,
        client: Redis,
        *,
        ttl_seconds: int,
        breaker: CircuitBreaker,
        key_prefix: str = "stockroom:",
        namespace: str = "product",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._breaker = breaker
        self._prefix = key_prefix
        self._body_prefix = f"{key_prefix}{namespace}:"
        self._epoch_key = f"{key_prefix}epoch"
        self._counter_key = f"{key_prefix}generation"
        self.channel = f"{key_prefix}invalidations"
        self._sleep = sleep
        self._epoch = "0"
        self._lost: set[Key] = set()
        self._bump_lock = asyncio.Lock()
        self._repair: asyncio.Task[None] | None = None
        self._fill_script = client.register_script(_FILL_LUA)
        self._invalidate_script = client.register_script(_INVALIDATE_LUA)
        self._bump_script = client.register_script(_BUMP_EPOCH_LUA)

    @classmethod
    def from_url(cls, url: str, options: CacheOptions, *, namespace: str = "product") -> RedisCache:
        """Build the client without connecting (adapters/redis_pool.py: one failure costs one
        timeout; a burst waits for a connection instead of opening the breaker)."""
        pool = fail_fast_pool(url, timeout=options.socket_timeout, max_connections=MAX_CONNECTIONS)
        client = Redis.from_pool(pool)
        breaker = CircuitBreaker(cooldown=options.breaker_cooldown, clock=options.clock)
        return cls(
            client,
            ttl_seconds=options.ttl_seconds,
            breaker=breaker,
            key_prefix=options.key_prefix,
            namespace=namespace,
            sleep=options.sleep,
        )

    @property
    def lost_invalidations(self) -> frozenset[Key]:
        """Keys whose invalidation has not reached Redis yet (cleared by the epoch bump)."""
        return frozenset(self._lost)

    async def read(self, key: Key) -> CachedProduct:
        epoch = self._epoch
        try:
            async with self._guarded("read"):
                body, generation, live_epoch = await self._client.mget(
                    self._body_key(epoch, key), self._gen_key(key), self._epoch_key
                )
        except CacheUnavailable:
            CACHE_REQUESTS.labels(result="error").inc()
            return CachedProduct(None, None)
        current = _text(live_epoch)
        token = f"{current}.{_text(generation)}"
        if current != epoch:
            self._epoch = current
            body = None
        if body is None:
            CACHE_REQUESTS.labels(result="miss").inc()
            return CachedProduct(None, token)
        CACHE_REQUESTS.labels(result="hit").inc()
        return CachedProduct(body.encode() if isinstance(body, str) else body, token)

    async def fill(self, key: Key, body: bytes, token: str | None) -> None:
        epoch, dot, generation = (token or "").partition(".")
        if not dot:
            return
        keys = [self._body_key(epoch, key), self._gen_key(key), self._epoch_key]
        with contextlib.suppress(CacheUnavailable):
            async with self._guarded("fill"):
                await self._fill_script(keys=keys, args=[generation, epoch, body, self._ttl])

    async def invalidate(self, key: Key) -> None:
        keys = [self._epoch_key, self._counter_key, self._gen_key(key)]
        args: list[str | int] = [self._body_prefix, str(key), GENERATION_TTL_SECONDS, self.channel]
        try:
            async with self._guarded("invalidate"):
                self._epoch = _text(await self._invalidate_script(keys=keys, args=args))
        except CacheUnavailable:
            self._lost.add(key)
            self._repair_in_background()

    async def ping(self) -> None:
        async with self._guarded("ping"):
            await self._client.ping()

    async def close(self) -> None:
        await stop_task(self._repair)
        await self._client.aclose()

    def _body_key(self, epoch: str, key: Key) -> str:
        return f"{self._body_prefix}{epoch}:{key}"

    def _gen_key(self, key: Key) -> str:
        return f"{self._prefix}gen:{key}"

    @contextlib.asynccontextmanager
    async def _guarded(self, operation: str) -> AsyncIterator[None]:
        """Run one call through the breaker, bumping the epoch first if invalidations were lost.

        Raises:
            CacheUnavailable: the breaker is open, or Redis failed (the breaker then opens).
        """
        if not self._breaker.allow():
            raise CacheUnavailable("cache circuit breaker is open")
        with self._translate_redis_errors(operation):
            if self._lost:
                await self._bump_epoch()
            yield
        if self._breaker.record_success():
            CACHE_BREAKER_OPEN.set(0)
            _logger().warning("cache.recovered", operation=operation, epoch=self._epoch)

    @contextlib.contextmanager
    def _translate_redis_errors(self, operation: str) -> Iterator[None]:
        """The one place Redis errors become `CacheUnavailable`; counted, logged once per outage."""
        try:
            yield
        except (RedisError, OSError) as exc:
            CACHE_ERRORS.labels(operation=operation).inc()
            if self._breaker.record_failure():
                CACHE_BREAKER_OPEN.set(1)
                _logger().warning(
                    "cache.unavailable",
                    operation=operation,
                    error=type(exc).__name__,
                    detail=str(exc),
                    lost_invalidations=len(self._lost),
                )
            raise CacheUnavailable(f"redis {operation} failed: {exc}") from exc

    def _repair_in_background(self) -> None:
        """Bump the epoch as soon as the breaker lets a call through, even if this process
        makes no other call: until then, other instances serve what it failed to invalidate."""
        if self._repair is None or self._repair.done():
            self._repair = asyncio.get_running_loop().create_task(
                self._repair_lost(), name="cache-repair"
            )

    async def _repair_lost(self) -> None:
        while self._lost and not cancel_requested():
            await self._sleep(self._breaker.cooldown)
            with contextlib.suppress(CacheUnavailable):
                async with self._guarded("repair"):
                    pass  # entering bumps the epoch first, while invalidations are lost

    async def _bump_epoch(self) -> None:
        """Orphan every cached body, since some invalidations never reached Redis."""
        async with self._bump_lock:
            lost = set(self._lost)
            if not lost:
                return
            bumped = await self._bump_script(keys=[self._epoch_key], args=[self.channel])
            self._epoch = str(bumped)
            self._lost -= lost
            _logger().warning("cache.epoch_bumped", epoch=self._epoch, lost_invalidations=len(lost))

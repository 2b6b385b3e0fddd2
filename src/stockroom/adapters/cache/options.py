"""The settings every cache builder takes, as one object: each backend reads what it needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """`key_prefix` names a cache's keys in Redis (one prefix per cache, e.g. products and
    tokens apart); `near_max_entries` > 0 puts a per-process near-cache in front of Redis.
    `clock` and `sleep` drive TTLs, the breaker and the repair loop (tests pass fakes)."""

    ttl_seconds: int
    socket_timeout: float
    breaker_cooldown: float
    key_prefix: str = "stockroom:"
    near_max_entries: int = 0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

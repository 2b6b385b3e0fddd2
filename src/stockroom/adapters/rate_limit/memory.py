"""Rate limits counted in process memory: embedded mode, where one process serves everything."""

from __future__ import annotations

import asyncio
import contextlib

from limits.aio.storage import MemoryStorage

from stockroom.adapters.rate_limit.windows import WindowRateLimiter


def memory_rate_limiter(
    _url: str, *, socket_timeout: float, breaker_cooldown: float, key_prefix: str
) -> WindowRateLimiter:
    """Counters in this process only; the timings and prefix are for Redis and ignored here."""
    storage = MemoryStorage()

    async def close() -> None:
        # The storage expires counters in a background task it starts on each hit.
        timer = storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    return WindowRateLimiter(storage, on_close=close)

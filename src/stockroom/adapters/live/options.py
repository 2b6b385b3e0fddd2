"""The settings every live hub builder takes, as one object: each backend reads what it needs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from stockroom.domain.live import REPLAY_WINDOW_SECONDS


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """`buffer_size`: events a stream may have waiting before it is dropped as too slow.
    `window_seconds` and `max_events_per_user` bound what is kept for replay.
    `subscribe_timeout`: how long a new stream waits for Redis to confirm its subscription
    (then LiveStatusUnavailable). `ping_interval`: how often the pub/sub connection is
    checked; a silent one is replaced after `ping_interval + socket_timeout`. `clock` is
    wall-clock seconds (event ids are milliseconds since the epoch); tests pass a fake."""

    buffer_size: int = 256
    window_seconds: int = REPLAY_WINDOW_SECONDS
    max_events_per_user: int = 10_000
    replay_page_size: int = 100
    socket_timeout: float = 2.0
    subscribe_timeout: float = 5.0
    ping_interval: float = 2.0
    breaker_cooldown: float = 5.0
    key_prefix: str = "stockroom:"
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if min(self.buffer_size, self.window_seconds, self.max_events_per_user) < 1:
            raise ValueError("buffer_size, window_seconds and max_events_per_user must be >= 1")
        if self.replay_page_size < 1:
            raise ValueError("replay_page_size must be >= 1")
        timeouts = (self.socket_timeout, self.subscribe_timeout, self.breaker_cooldown)
        if min(*timeouts, self.ping_interval) <= 0:
            raise ValueError("timeouts, breaker_cooldown and ping_interval must be > 0")

"""Live-status hubs (`GET /events`), chosen by the scheme of their URL from one table: Redis
shares events between API instances, memory keeps them in one process (embedded mode)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from stockroom.adapters.live.memory import MemoryLiveHub
from stockroom.adapters.live.options import LiveOptions
from stockroom.adapters.live.redis import RedisLiveHub
from stockroom.domain.live import LiveHub

__all__ = ["LiveOptions", "MemoryLiveHub", "RedisLiveHub", "build_live_hub"]

_BY_SCHEME: dict[str, Callable[[str, LiveOptions], LiveHub]] = {
    "redis": RedisLiveHub.from_url,
    "rediss": RedisLiveHub.from_url,
    "memory": MemoryLiveHub.from_url,
}


def build_live_hub(url: str, options: LiveOptions | None = None) -> LiveHub:
    """The hub `url` names; nothing connects until the first publish or subscription.

    Raises:
        ValueError: the scheme is not one of `redis`, `rediss`, `memory`.
    """
    scheme = urlsplit(url).scheme
    factory = _BY_SCHEME.get(scheme)
    if factory is None:
        raise ValueError(
            f"unsupported live-status URL scheme {scheme!r}; use one of {sorted(_BY_SCHEME)}"
        )
    return factory(url, options or LiveOptions())

"""What a worker process builds for its jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.services import REDIS_URL
from tests.support.settings import make_settings

from stockroom.adapters.cache import NearCache, RedisCache
from stockroom.worker import WorkerRuntime

pytestmark = pytest.mark.redis


async def test_a_worker_invalidates_redis_directly_without_a_near_cache(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A worker never reads products from the cache, and nobody waits on its answer: no
    subscription to every process's invalidations, no wait for its own echo."""
    settings = make_settings(
        sqlite_url, tmp_path / "media", cache_url=REDIS_URL, cache_near_max_entries=1000
    )
    runtime = WorkerRuntime(settings)
    try:
        context = await runtime.context()
        assert isinstance(context.cache, RedisCache)
        assert not isinstance(context.cache, NearCache)
    finally:
        await runtime.close()
    assert settings.cache_near_max_entries == 1000  # the caller's settings are untouched

"""`stockroom serve --workers 2`: a scrape of /metrics, whichever process answers it,
counts the requests of both processes (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.api_processes import STOCKROOM, cli_token, is_up
from tests.support.redis_server import require_redis, unique_prefix
from tests.support.services import REDIS_URL, free_port
from tests.support.waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
ME = re.compile(r'^stockroom_http_requests_total\{[^}]*route="/me"[^}]*\} ([0-9.e+]+)$', re.M)


async def test_a_scrape_counts_every_processs_requests(postgres_url: str, tmp_path: Path) -> None:
    require_redis()
    port = free_port()
    env = {
        **os.environ,
        "STOCKROOM_ENVIRONMENT": "test",
        "STOCKROOM_DATABASE_URL": postgres_url,
        "STOCKROOM_CACHE_URL": REDIS_URL,
        "STOCKROOM_CACHE_KEY_PREFIX": unique_prefix(),
        # --workers > 1 needs a shared broker; nothing here publishes to it.
        "STOCKROOM_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "STOCKROOM_STORAGE_URL": f"file://{tmp_path / 'media'}",
        "STOCKROOM_LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    base = f"http://127.0.0.1:{port}"
    command = [str(STOCKROOM), "serve", "--port", str(port), "--workers", "2"]
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            headers = {"Authorization": f"Bearer {cli_token(env, 'metrics@example.com')}"}
            # New connections each time: the kernel spreads them over both processes.
            async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as http:
                await eventually(functools.partial(is_up, http, base), timeout=30, interval=0.1)
                for _ in range(40):
                    assert (await http.get(f"{base}/me", headers=headers)).status_code == 200
                scrapes = [(await http.get(f"{base}/metrics")).text for _ in range(6)]
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise

    counts = {float(ME.findall(scrape)[0]) for scrape in scrapes}
    assert counts == {40.0}, counts
    # The files of every process, summed (one process's own registry has python_info).
    assert not any("python_info" in scrape for scrape in scrapes)

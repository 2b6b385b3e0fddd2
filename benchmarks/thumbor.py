"""thumbor beside Stockroom: thumbor 7.8.0 in the bench venv (`.bench/venv`, installed on
first use), in its best case: the file loader on the corpus directory, no storage, no result
storage, `--processes 2`, JPEG quality 50 (Stockroom's); everything else is thumbor's
default (PIL engine, optimised progressive JPEG, metadata not kept)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import RESULTS_DIR
from benchmarks.bare import JPEG_QUALITY, Shape
from benchmarks.benchvenv import ToolUnavailable, ensure_tool
from benchmarks.corpus import Corpus
from benchmarks.load import CpuWatch, process_tree
from benchmarks.load_client import LoadClient
from benchmarks.servers import ServerError, free_port, wait_healthy

VERSION = "7.8.0"
PROCESSES = 2
CONFIG = """\
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {root!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
QUALITY = {quality}
ALLOW_UNSAFE_URL = True
"""


@dataclass(slots=True)
class Thumbor:
    base_url: str
    process: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    @staticmethod
    def path(shape: Shape, name: str) -> str:
        """fit-in never enlarges, as Stockroom's resize does not."""
        return f"/unsafe/fit-in/{shape.box}x{shape.box}/{name}"


@contextlib.asynccontextmanager
async def running_thumbor(corpus: Corpus) -> AsyncIterator[Thumbor]:
    """thumbor serving the corpus on 127.0.0.1; raises ToolUnavailable with the reason."""
    binary = await asyncio.to_thread(ensure_tool, "thumbor", f"thumbor=={VERSION}")
    config = RESULTS_DIR / "thumbor.conf"
    config.write_text(CONFIG.format(root=str(corpus.directory.resolve()), quality=JPEG_QUALITY))
    log = RESULTS_DIR / "thumbor.log"
    port = free_port()
    command = [
        str(binary), "--ip", "127.0.0.1", "--port", str(port), "--conf", str(config),
        "--log-level", "warning", "--processes", str(PROCESSES),
    ]  # fmt: skip
    env = {**os.environ, "VIPS_CONCURRENCY": "1"}
    with log.open("wb") as out:
        # A session of its own: `--processes` forks children that outlive a stopped parent.
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    thumbor = Thumbor(f"http://127.0.0.1:{port}", process)
    try:
        await _wait_working(thumbor, log)
        yield thumbor
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to thumbor's process group, SIGKILL to what is left after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


async def _wait_working(thumbor: Thumbor, log: Path) -> None:
    try:
        await wait_healthy(thumbor.base_url, thumbor.process, log, path="/healthcheck")
    except ServerError as exc:
        raise ToolUnavailable(f"thumbor did not start: {exc}") from exc


@dataclass(slots=True)
class ThumborWindow:
    images: int
    seconds: float
    latencies_ms: list[float]
    bytes_out: int
    errors: list[str]
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


async def _client(
    client: LoadClient, shape: Shape, names: list[str], window: ThumborWindow
) -> None:
    for name in names:
        started = time.perf_counter()
        response = await client.get(Thumbor.path(shape, name))
        window.latencies_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or response.content_type != "image/jpeg":
            window.errors.append(f"{name}: {response.status_code}")
        window.bytes_out += len(response.body)


async def thumbor_window(
    thumbor: Thumbor, shape: Shape, names: list[str], clients: int, cpu_groups: CpuWatch
) -> ThumborWindow:
    """Every name once through thumbor, `clients` closed-loop clients sharing them (made
    before the window starts, as Stockroom's are)."""
    window = ThumborWindow(len(names), 0.0, [], 0, [])
    # A connection per request: thumbor's processes share one listening socket, and a kept
    # connection stays with the process that accepted it, so four opened at once may all
    # land on one process and leave the other idle (docs/performance.md, "The load clients").
    users = [LoadClient(thumbor.base_url, keep_alive=False) for _ in range(clients)]
    try:
        cpu_groups.start()
        started = time.perf_counter()
        await asyncio.gather(
            *(_client(user, shape, names[i::clients], window) for i, user in enumerate(users))
        )
        window.seconds = time.perf_counter() - started
        window.cpu = cpu_groups.stop(window.seconds)
    finally:
        await asyncio.gather(*(user.aclose() for user in users))
    return window

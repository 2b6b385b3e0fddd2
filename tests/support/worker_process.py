"""`stockroom worker` as a real subprocess, configured through the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STOCKROOM = Path(sys.executable).with_name("stockroom")


@contextmanager
def running_worker(env: dict[str, str], log_path: Path, processes: int = 2) -> Iterator[int]:
    """Start the worker supervisor; yield its pid; always stop it (and its children)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(STOCKROOM), "worker", "--processes", str(processes), "--threads", "1"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process.pid
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def children_of(pid: int) -> list[int]:
    """The worker processes the supervisor started (Linux /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    found: list[int] = []
    for task in tasks.iterdir() if tasks.exists() else []:
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:  # not multiprocessing's resource tracker
                found.append(int(child))
    return found


def wait_for_children(pid: int, count: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = children_of(pid)
        if len(children) >= count:
            return children
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} did not start {count} processes")

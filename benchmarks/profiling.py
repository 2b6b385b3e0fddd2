"""Where a worker's time goes during a window: each thread's CPU from /proc (the truth:
py-spy counts a thread blocked in `poll` or a queue as busy), and py-spy's stacks
(`py-spy record --subprocesses --format speedscope`) for what the busy threads run.
Threads are grouped by role (event loop, libvips executor, ...), found from their stacks."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.benchvenv import ensure_tool
from benchmarks.load import CLOCK_TICKS

PY_SPY = "py-spy==0.4.3"
RATE_HZ = 100
# A thread's role, from a function on its stacks (exact name) or its thread name (prefix).
_ROLES = (
    ("EventLoopThread.run", "event loop (downloads, DB, storage, logs)"),
    ("ConsumerThread.run", "Dramatiq consumers (pika)"),
    ("WorkerThread.run", "Dramatiq worker threads"),
    ("libvips", "libvips executor (process())"),
    ("uvloop", "default executor (file writes)"),
)
# Leaf frames where a thread waits (polls, sleeps on a lock or a queue) or where uvloop's
# C loop runs (its waits and its own work look alike there): left out of the stacks.
_WAITS = {
    "poll",
    "select",
    "wait",
    "_worker",
    "get",
    "run",
    "sleep",
    "acquire",
    "EventLoopThread.run",
}
_NOISE = ("threading.py", "concurrent/futures/thread.py", "<frozen")


def thread_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of `pids`, by thread id."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    stat = (task / "stat").read_text()
                    fields = stat[stat.rindex(")") + 2 :].split()
                    out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


@contextlib.contextmanager
def py_spy(root_pid: int, output: Path) -> Iterator[None]:
    """Record `root_pid` and its children until the block ends (raises ToolUnavailable)."""
    binary = ensure_tool("py-spy", PY_SPY)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    log = output.with_suffix(".log")
    command = [
        str(binary), "record", "--pid", str(root_pid), "--subprocesses", "--rate",
        str(RATE_HZ), "--format", "speedscope", "--output", str(output),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes the profile on Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(slots=True)
class Role:
    name: str
    cpu_s: float = 0.0  # from /proc
    threads: int = 0
    frames: Counter[str] = field(default_factory=Counter)  # inclusive, busy samples only
    leaves: Counter[str] = field(default_factory=Counter)  # the Python frame on top
    busy_samples: int = 0


def _label(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "")
    short = file.split("site-packages/")[-1].split("/src/")[-1].split("python3.11/")[-1]
    return f"{frame.get('name')} ({short})"


def _role(name: str, stacks: list[list[int]], names: list[str]) -> str:
    seen = {names[i] for stack in stacks[:50] for i in stack}
    thread = name.split('"')[1] if '"' in name else name
    for marker, role in _ROLES:
        if marker in seen or thread.startswith(marker):
            return role
    return thread


def summarise(path: Path, cpu: dict[int, float]) -> list[Role]:
    """Roles by CPU (`cpu`: seconds per thread id over the window), with the inclusive
    frames of their samples that are not waits."""
    document = json.loads(path.read_text())
    frames = document["shared"]["frames"]
    names = [str(frame.get("name")) for frame in frames]
    labels = [_label(frame) for frame in frames]
    noise = [
        not frame.get("file") or any(part in str(frame["file"]) for part in _NOISE)
        for frame in frames
    ]
    roles: dict[str, Role] = {}
    seen: set[int] = set()
    for profile in document["profiles"]:
        # py-spy names a profile `Process <pid> Thread <tid> "<name>"`
        parts = str(profile["name"]).split()
        tid = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else -1
        stacks = [stack for stack in profile["samples"] if stack]
        role = roles.setdefault(key := _role(str(profile["name"]), stacks, names), Role(key))
        role.cpu_s += cpu.get(tid, 0.0)
        role.threads += 1
        seen.add(tid)
        for stack in stacks:
            if names[stack[-1]].rsplit(".", 1)[-1] in _WAITS:
                continue
            role.busy_samples += 1
            role.frames.update({labels[i] for i in stack if not noise[i]})
            role.leaves[labels[stack[-1]]] += 1
    # Threads without Python frames: libvips' own workers (the pixels), pika's none.
    native = Role("native threads (libvips' workers: the pixels; no Python stacks)")
    for tid, seconds in cpu.items():
        if tid not in seen:
            native.cpu_s += seconds
            native.threads += 1
    if native.threads:
        roles[native.name] = native
    return sorted(roles.values(), key=lambda role: -role.cpu_s)


def summary_text(roles: list[Role], images: int, top: int = 8) -> str:
    """Per role: CPU ms per image (both processes), then the functions most often on its
    busy stacks, in percent of those stacks."""
    lines = []
    for role in roles:
        ms = role.cpu_s * 1000 / max(images, 1)
        lines.append(
            f"{role.name}: {ms:.1f} ms CPU per image "
            f"({role.threads} threads, {role.busy_samples} busy samples)"
        )
        if ms < 1 or not role.busy_samples:
            continue
        common = [
            (label, count)
            for label, count in role.frames.most_common(top + 4)
            if count < 0.97 * role.busy_samples  # wrappers on every stack say nothing
        ]
        lines.extend(
            f"  {100 * count / role.busy_samples:4.0f} %  {label}" for label, count in common[:top]
        )
        lines.extend(
            f"  {100 * count / role.busy_samples:4.0f} %  on top: {label}"
            for label, count in role.leaves.most_common(4)
        )
    return "\n".join(lines)

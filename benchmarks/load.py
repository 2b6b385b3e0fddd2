"""Driving HTTP load with wrk (C, event loop, one thread) and a Lua script; measuring
who burns the CPU meanwhile (server, load generator, PostgreSQL, whole machine)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import Row

WRK_MARKER = "WRK_JSON "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# One script for every row; `init(args)` picks the mode. A static request (no global
# `request` function) lets wrk reuse one pre-built request, the cheapest possible load.
WRK_SCRIPT = r"""
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local function split(text)
  local out = {}
  for item in string.gmatch(text or "", "([^,]+)") do table.insert(out, item) end
  return out
end

function init(args)
  local mode, token = args[1], args[2]
  math.randomseed(os.time() * 1000 + (tid or 1))
  if token and token ~= "-" then wrk.headers["Authorization"] = "Bearer " .. token end
  if mode == "ids" then
    local first, last, step = tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
    local slots = math.floor((last - first) / step)
    request = function()
      local id = first + step * math.random(0, slots)
      return wrk.format("GET", "/products/" .. id)
    end
  elseif mode == "list" then
    local words, prices = split(args[3]), split(args[4])
    request = function()
      local word = words[math.random(#words)]
      local price = prices[math.random(#prices)]
      return wrk.format("GET", "/products?name=" .. word .. "&min_price=" .. price)
    end
  elseif mode == "post" then
    local words = split(args[3])
    wrk.headers["Content-Type"] = "application/json"
    request = function()
      counter = counter + 1
      local name = words[math.random(#words)] .. " bench item " .. counter
      local cents = math.random(100, 99999)
      local body = string.format(
        '{"product_name": "%s", "product_price": "%d.%02d", "product_images": []}',
        name, math.floor(cents / 100), cents % 100)
      return wrk.format("POST", "/products", nil, body)
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
"""


class LoadError(RuntimeError):
    pass


def ensure_wrk() -> str:
    """The path of wrk; installs the Debian package when running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get install -y wrk", file=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "wrk"],
            check=False,
            stdout=subprocess.DEVNULL,
        )
        found = shutil.which("wrk")
        if found:
            return found
    raise LoadError(
        "the API benchmark needs wrk: run `sudo apt-get install wrk` (Debian/Ubuntu) "
        "or `brew install wrk` (macOS), then run the benchmark again"
    )


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Cumulative CPU seconds of each watched process, and of the whole machine."""

    per_group: dict[str, dict[int, float]]
    machine_busy: float
    machine_total: float


@dataclass(slots=True)
class CpuWatch:
    """CPU use of named process groups over an interval, in percent of one core.

    Groups map a name to a callable listing that group's pids at sampling time; a
    process that starts during the interval counts whole, one that exits is lost.
    """

    groups: dict[str, Callable[[], list[int]]]
    _start: CpuSample | None = None

    def sample(self) -> CpuSample:
        per_group = {
            name: {pid: _process_cpu(pid) for pid in pids_of()}
            for name, pids_of in self.groups.items()
        }
        busy, total = _machine_cpu()
        return CpuSample(per_group, busy, total)

    def start(self) -> None:
        self._start = self.sample()

    def stop(self, seconds: float) -> dict[str, float]:
        if self._start is None:
            raise RuntimeError("CpuWatch.stop() before start()")
        end = self.sample()
        usage: dict[str, float] = {}
        for name, pids in end.per_group.items():
            before = self._start.per_group.get(name, {})
            spent = sum(cpu - before.get(pid, 0.0) for pid, cpu in pids.items())
            usage[name] = round(100 * spent / seconds, 1)
        total = end.machine_total - self._start.machine_total
        busy = end.machine_busy - self._start.machine_busy
        # The whole machine, in percent of one core too: 200 means both cores were busy.
        usage["machine"] = round(100 * busy / total * _cores(), 1) if total > 0 else 0.0
        return usage


def _cores() -> int:
    return os.cpu_count() or 1


def _process_cpu(pid: int) -> float:
    """utime + stime of `pid`, in seconds; 0 for a process that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return float(total - idle), float(total)


async def busy_cores(seconds: float = 1.0) -> float:
    """How busy the machine is, in percent of one core, over `seconds` (before loading)."""
    busy, total = _machine_cpu()
    await asyncio.sleep(seconds)
    busy2, total2 = _machine_cpu()
    return round(100 * (busy2 - busy) / max(total2 - total, 1e-9) * _cores(), 1)


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (the server's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.requests_per_s, 1),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "errors": self.errors,
            "cpu_percent_of_one_core": self.cpu,
        }


class Wrk:
    """Runs wrk against one base URL with the shared Lua script."""

    def __init__(self, base_url: str, cpu_groups: dict[str, Callable[[], list[int]]]) -> None:
        self.binary = ensure_wrk()
        self.base_url = base_url
        self.cpu_groups = cpu_groups
        self._dir = tempfile.TemporaryDirectory(prefix="stockroom-bench-")
        self.script = Path(self._dir.name) / "stockroom.lua"
        self.script.write_text(WRK_SCRIPT)

    def close(self) -> None:
        self._dir.cleanup()

    async def run(
        self,
        path: str,
        mode: str,
        args: Sequence[str] = (),
        *,
        token: str | None = None,
        connections: int = 32,
        seconds: float = 10,
        warmup_seconds: float = 2,
    ) -> LoadResult:
        if warmup_seconds > 0:
            await self._wrk(path, mode, args, token, connections, warmup_seconds, None)
        return await self._wrk(path, mode, args, token, connections, seconds, self.cpu_groups)

    async def _wrk(
        self,
        path: str,
        mode: str,
        args: Iterable[str],
        token: str | None,
        connections: int,
        seconds: float,
        cpu_groups: dict[str, Callable[[], list[int]]] | None,
    ) -> LoadResult:
        command = [
            self.binary,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(self.script),
            self.base_url + path,
            "--",
            mode,
            token or "-",
            *args,
        ]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        watch = None
        if cpu_groups is not None:
            groups = dict(cpu_groups)
            groups["wrk"] = lambda: [process.pid]
            watch = CpuWatch(groups)
            watch.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Sample the CPU just before wrk exits: a reaped process has no /proc entry.
        await asyncio.sleep(max(0.0, round(seconds) - 0.05))
        cpu = watch.stop(loop.time() - started) if watch else {}
        stdout, stderr = await process.communicate()
        if process.returncode != 0:
            raise LoadError(f"wrk failed ({process.returncode}): {stderr.decode()[-2000:]}")
        return _parse(stdout.decode(), cpu)


def _parse(output: str, cpu: dict[str, float]) -> LoadResult:
    for line in output.splitlines():
        if line.startswith(WRK_MARKER):
            data = json.loads(line[len(WRK_MARKER) :])
            break
    else:
        raise LoadError(f"no summary in wrk output:\n{output[-2000:]}")
    seconds = data["duration_us"] / 1e6
    errors = {
        key: int(data[key])
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    }
    return LoadResult(
        requests=int(data["requests"]),
        seconds=seconds,
        requests_per_s=data["requests"] / seconds if seconds else 0.0,
        p50_ms=round(data["p50_us"] / 1000, 2),
        p90_ms=round(data["p90_us"] / 1000, 2),
        p99_ms=round(data["p99_us"] / 1000, 2),
        p999_ms=round(data["p999_us"] / 1000, 2),
        max_ms=round(data["max_us"] / 1000, 2),
        errors=errors,
        cpu=cpu,
    )


def cpu_note(cpu: dict[str, float], labels: dict[str, str]) -> str:
    """`label value` for each process in `labels` (CPU key -> label), then the rest of
    the machine as `other`: the table's CPU column."""
    ours = sum(cpu.get(key, 0.0) for key in labels)
    other = max(0.0, cpu.get("machine", 0.0) - ours)
    parts = " ".join(f"{label} {cpu.get(key, 0):.0f}" for key, label in labels.items())
    return f"{parts} other {other:.0f}"


def load_row(
    section: str, name: str, load: LoadResult, *, constant: float, connections: int, note: str
) -> Row:
    """A table row for one wrk run, with its ratio to the constant endpoint's req/s."""
    return Row(
        section=section,
        name=name,
        requests_per_s=load.requests_per_s,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        ratio=load.requests_per_s / constant if constant else None,
        note=note,
        extra={"connections": connections, **load.as_dict()},
    )

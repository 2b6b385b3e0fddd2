"""The `live` section's table rows, targets and raw figures, from what its parts measured."""

from __future__ import annotations

import contextlib
import json
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import Row, SectionResult
from benchmarks.live_latency import LatencyWindow, pool
from benchmarks.live_streams import PROBE, StreamsRun
from benchmarks.live_webhooks import Deliveries
from benchmarks.live_webhooks import pool as pool_deliveries
from benchmarks.load import LoadResult, cpu_note

TARGET_P99_MS = 100.0
TARGET_KB_PER_STREAM = 50.0
TARGET_P99_GROWTH = 1.10  # p99 with the streams open / without
TARGET_SENDER = 0.5  # WebhookSender deliveries/s / bare aiohttp's

_LATENCY_CPU = {"publisher": "pub", "api_b": "srv-b", "api_a": "srv-a", "postgres": "pg",
                "redis": "redis", "bench": "bench"}  # fmt: skip
_WRK_CPU = {"server": "srv", "wrk": "wrk", "postgres": "pg", "redis": "redis"}
_WEBHOOK_CPU = {"bench": "bench", "receiver": "recv"}
_LOUD = ("warning", "error", "critical")


@dataclass(slots=True)
class Figures:
    latency: list[LatencyWindow] = field(default_factory=list)
    streams: StreamsRun | None = None
    keepalive_kb: tuple[int, int] | None = None  # B's RSS before / with idle connections
    deliveries: list[Deliveries] = field(default_factory=list)
    warnings: dict[str, dict[str, int]] = field(default_factory=dict)  # by server, by event


def warnings_in(logs: dict[str, Path]) -> dict[str, dict[str, int]]:
    """How many warnings (and errors) of each event the servers logged, by server."""
    found: dict[str, dict[str, int]] = {}
    for name, path in logs.items():
        counts: Counter[str] = Counter()
        with path.open("rb") as lines:
            for line in lines:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict) and entry.get("level") in _LOUD:
                        counts[str(entry.get("event"))] += 1
        found[name] = dict(counts.most_common())
    return found


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _mean(values: Iterable[float]) -> float:
    return round(statistics.mean(values), 1)


def _mean_load(loads: list[LoadResult]) -> dict[str, Any]:
    keys = {key for load in loads for key in load.cpu}
    return {
        "requests_per_s": statistics.mean(load.requests_per_s for load in loads),
        "p50_ms": round(statistics.mean(load.p50_ms for load in loads), 2),
        "p99_ms": round(statistics.mean(load.p99_ms for load in loads), 2),
        "cpu": {key: _mean(load.cpu.get(key, 0.0) for load in loads) for key in keys},
        "errors": sum(sum(load.errors.values()) for load in loads),
    }


def _latency(result: SectionResult, figures: Figures, rate: float) -> str:
    bare, jobs = pool(figures.latency, "bare", rate), pool(figures.latency, "jobs", rate)
    times = jobs.p99_ms / bare.p99_ms
    section = result.name
    result.rows += [
        Row(section, f"(a) anchor: Redis PUBLISH -> SUBSCRIBE (redis-py), {rate:.0f}/s", rate,
            bare.p50_ms, bare.p99_ms, 1.0, cpu_note(bare.cpu, _LATENCY_CPU)),
        Row(section, f"(a) job commit -> SSE event on instance B, {rate:.0f} jobs/s", rate,
            jobs.p50_ms, jobs.p99_ms, None,
            f"p99 {times:.1f}x anchor; " + cpu_note(jobs.cpu, _LATENCY_CPU)),
    ]  # fmt: skip
    result.meta["latency"] = {
        "pooled": [asdict(bare), asdict(jobs)],
        "windows": [w.summary() for w in figures.latency],
    }
    met = jobs.p99_ms < TARGET_P99_MS and jobs.lost == 0
    lost = f", {jobs.lost} of {jobs.sent} never arrived" if jobs.lost else ""
    return (
        f"(a) commit -> SSE on instance B, {rate:.0f} jobs/s, {jobs.sent} events: p50 "
        f"{jobs.p50_ms:.1f} ms, p99 {jobs.p99_ms:.1f} ms (target p99 < {TARGET_P99_MS:.0f} ms"
        f"{lost}): {_verdict(met)}. Anchor, bare PUBLISH -> SUBSCRIBE: p50 {bare.p50_ms:.2f}, "
        f"p99 {bare.p99_ms:.2f} ms; the system's p99 = {times:.1f}x the anchor's. Per window "
        "(bare / jobs p99, ms): " + ", ".join(f"{w.summary()['p99_ms']}" for w in figures.latency)
    )


def _streams(
    result: SectionResult, run: StreamsRun, keepalive: tuple[int, int], streams: int,
    connections: int,
) -> str:  # fmt: skip
    without, with_streams = _mean_load(run.without), _mean_load(run.with_streams)
    growth = with_streams["p99_ms"] / without["p99_ms"]
    throughput = with_streams["requests_per_s"] / without["requests_per_s"]
    per_stream_kb = [(after - before) / streams for before, after in run.rss_kb]
    first_kb = per_stream_kb[0]
    connection_kb = (keepalive[1] - keepalive[0]) / streams
    section = result.name
    label = f"(b) GET /products/{{id}} cached, {connections} conn"
    result.rows += [
        Row(section, f"{label}, no stream open", without["requests_per_s"], without["p50_ms"],
            without["p99_ms"], 1.0, cpu_note(without["cpu"], _WRK_CPU)),
        Row(section, f"{label}, {streams:,} idle streams open", with_streams["requests_per_s"],
            with_streams["p50_ms"], with_streams["p99_ms"], throughput,
            f"p99 {growth:.2f}x; " + cpu_note(with_streams["cpu"], _WRK_CPU)),
        Row(section, f"(b) anchor: server RSS per idle keep-alive connection (B): "
            f"{connection_kb:.1f} KB"),
        Row(section, f"(b) server RSS per idle stream (A): {first_kb:.1f} KB ({streams:,})",
            note=f"{first_kb / connection_kb:.1f}x a keep-alive connection"),
    ]  # fmt: skip
    result.meta["streams"] = {
        "without": [load.as_dict() for load in run.without],
        "with": [load.as_dict() for load in run.with_streams],
        "rss_kb_before_after": run.rss_kb,
        "keepalive_rss_kb_before_after": keepalive,
        "probe_answered": run.probe_answered,
        "kb_per_stream": [round(kb, 2) for kb in per_stream_kb],
        "seconds_to_open": [round(s, 2) for s in run.seconds_to_open],
        "ended_at_once": run.ended_at_once,
        "refused_503": run.refused,
    }
    ended, refused = sum(run.ended_at_once), sum(run.refused)
    errors = without["errors"] + with_streams["errors"]
    p99s = " / ".join(
        f"{a.p99_ms:.1f}, {b.p99_ms:.1f}"
        for a, b in zip(run.without, run.with_streams, strict=True)
    )
    return (
        f"(b) {streams:,} idle streams on one API process: RSS +{first_kb:.1f} KB each "
        f"(target < {TARGET_KB_PER_STREAM:.0f} KB): {_verdict(first_kb < TARGET_KB_PER_STREAM)}"
        f" (later opens: {', '.join(f'{kb:.1f}' for kb in per_stream_kb[1:]) or '-'} KB; "
        f"opened in {', '.join(f'{s:.1f}' for s in run.seconds_to_open)} s"
        + (f"; {refused} answered 503, tried again" if refused else "")
        + (f"; {ended} ended by the server right after their 200, opened again" if ended else "")
        + "). Cached GET "
        f"/products/{{id}} p99 with / without = {growth:.2f} (target <= {TARGET_P99_GROWTH}): "
        f"{_verdict(growth <= TARGET_P99_GROWTH)}; req/s with / without = {throughput:.2f}. "
        f"p99 per pair (without, with), ms: {p99s}. Anchor: {connection_kb:.1f} KB per idle "
        f"keep-alive connection. With the streams open, {run.probe_answered} of {PROBE} new "
        "connections were served within 3 s" + (f"; {errors} wrk errors" if errors else "")
    )


def _webhooks(result: SectionResult, deliveries: list[Deliveries], concurrency: int) -> str:
    bare, sender = pool_deliveries(deliveries, "bare"), pool_deliveries(deliveries, "sender")
    ratio = sender.per_s / bare.per_s
    section = result.name
    result.rows += [
        Row(section, f"(c) anchor: bare aiohttp.ClientSession POST, {concurrency} at a time",
            bare.per_s, bare.p50_ms, bare.p99_ms, 1.0, cpu_note(bare.cpu, _WEBHOOK_CPU)),
        Row(section, f"(c) WebhookSender.send (signed, guarded), {concurrency} at a time",
            sender.per_s, sender.p50_ms, sender.p99_ms, ratio, cpu_note(sender.cpu, _WEBHOOK_CPU)),
    ]  # fmt: skip
    result.meta["webhooks"] = [
        {"kind": d.kind, "count": d.count, "seconds": round(d.seconds, 3),
         "per_s": round(d.count / d.seconds, 1), "failures": d.failures, "cpu": d.cpu}
        for d in deliveries
    ]  # fmt: skip
    failures = bare.failures + sender.failures
    return (
        f"(c) webhook deliveries/s, WebhookSender / bare aiohttp = {ratio:.2f} ({sender.per_s:,.0f}"
        f" vs {bare.per_s:,.0f}/s; target >= {TARGET_SENDER}): "
        f"{_verdict(ratio >= TARGET_SENDER and not failures)}"
        + (f"; {failures} deliveries not answered 200" if failures else "")
    )


def report(
    result: SectionResult,
    figures: Figures,
    *,
    rate: float,
    streams: int,
    connections: int,
    webhook_concurrency: int,
) -> None:
    lines = [_latency(result, figures, rate)]
    if figures.streams is not None and figures.keepalive_kb is not None:
        lines.append(_streams(result, figures.streams, figures.keepalive_kb, streams, connections))
    lines.append(_webhooks(result, figures.deliveries, webhook_concurrency))
    result.meta["server_warnings"] = figures.warnings
    for name, counts in figures.warnings.items():
        if counts:
            listed = ", ".join(f"{event} x{count}" for event, count in counts.items())
            lines.append(f"warnings logged by {name}: {listed}")
    result.notes.append(("Live status and webhooks: targets", "\n".join(lines)))

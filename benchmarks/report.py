"""Printing the results table with rich, and writing the raw results as JSON."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from benchmarks import RESULTS_DIR, Options, SectionResult


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(results: list[SectionResult]) -> Table:
    out = Table(title="Stockroom benchmarks", title_justify="left", show_lines=False)
    out.add_column("endpoint")
    out.add_column("req/s", justify="right")
    out.add_column("p50 ms", justify="right")
    out.add_column("p99 ms", justify="right")
    out.add_column("ratio to constant (req/s)", justify="right")
    out.add_column("CPU % of one core during the row", style="dim")
    for index, result in enumerate(results):
        if index:
            out.add_section()
        out.add_row(f"[bold]{result.title}[/bold]", "", "", "", "", "")
        for row in result.rows:
            out.add_row(
                row.name,
                _number(row.requests_per_s, 0),
                _number(row.p50_ms, 2),
                _number(row.p99_ms, 2),
                _number(row.ratio, 3),
                row.note,
            )
    return out


def print_results(results: list[SectionResult], console: Console | None = None) -> None:
    console = console or Console()
    for result in results:
        for heading, text in result.notes:
            console.print(Panel(text, title=heading, title_align="left", expand=False))
    console.print(table(results))


def write_json(result: SectionResult, options: Options, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"results-{result.name}{options.tag}.json"
    document = {
        "section": result.name,
        "title": result.title,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": options.quick,
        "experiments": list(options.experiments),
        "machine": machine(),
        "rows": [row.as_dict() for row in result.rows],
        "meta": result.meta,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path

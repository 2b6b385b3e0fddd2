"""Stockroom benchmarks: `python -m benchmarks [--quick] [--only NAME]`.

Each benchmark is a *section*: an object with a `name`, a `title` and an async
`run(options)` returning a `SectionResult` (rows for the shared table, plus free-form
notes such as a query plan). `benchmarks.__main__.SECTIONS` lists them; a new section
is a module appended there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / ".bench"


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line asked for."""

    quick: bool = False
    experiments: tuple[str, ...] = ()  # what-if database changes (benchmarks.seed)

    @property
    def tag(self) -> str:
        """Suffix of the results file: quick runs and experiments never overwrite the
        full baseline (`.bench/results-<section>.json`)."""
        return "".join(f"+{name}" for name in self.experiments) + (".quick" if self.quick else "")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table."""

    section: str
    name: str
    requests_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ratio: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class SectionResult:
    """What one benchmark section produced."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (heading, text)
    meta: dict[str, Any] = field(default_factory=dict)


class Section(Protocol):
    """A pluggable benchmark: `python -m benchmarks --only <name>` runs just this one."""

    name: str
    title: str

    async def run(self, options: Options) -> SectionResult: ...

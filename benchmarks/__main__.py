"""`python -m benchmarks [--quick] [--only NAME ...]`: run the benchmark sections, print
one table, write `.bench/results-<section>.json` per section."""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console

from benchmarks import Options, Section, SectionResult
from benchmarks.api import ApiBenchmark
from benchmarks.cache import CacheBenchmark
from benchmarks.imports import ImportsBenchmark
from benchmarks.jobs import JobsBenchmark
from benchmarks.live import LiveBenchmark
from benchmarks.pipeline import PipelineBenchmark
from benchmarks.report import print_results, write_json
from benchmarks.seed import EXPERIMENTS

# A new section is appended here.
SECTIONS: list[Section] = [
    ApiBenchmark(),
    PipelineBenchmark(),
    JobsBenchmark(),
    CacheBenchmark(),
    ImportsBenchmark(),
    LiveBenchmark(),
]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small data set and short runs (smoke test)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[section.name for section in SECTIONS],
        help="run only this section (repeatable)",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        choices=sorted(EXPERIMENTS),
        help="apply a what-if database change before loading (repeatable; results go to "
        ".bench/results-<section>+<experiment>.json)",
    )
    return parser.parse_args(argv)


async def run(sections: list[Section], options: Options) -> list[SectionResult]:
    results = []
    for section in sections:
        result = await section.run(options)
        path = write_json(result, options)
        print(f"[{section.name}] raw results: {path}", file=sys.stderr)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    options = Options(quick=args.quick, experiments=tuple(args.experiment))
    chosen = [s for s in SECTIONS if not args.only or s.name in args.only]
    results = asyncio.run(run(chosen, options))
    console = Console()
    if not console.is_terminal:  # piped into a file or `tee`: do not wrap at 80 columns
        console = Console(width=160)
    print_results(results, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())

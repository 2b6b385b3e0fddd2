"""What an idle API process costs: the CPU of `stockroom serve` (and of PostgreSQL) with no
request to answer. Every API process runs its chores all the time (the outbox listener, the
upload-expiry and import-completion sweeps, the caches' subscriptions), on the cores the
workers' libvips needs. Measured with the import sweep at its default period and with it
off (`STOCKROOM_IMPORT_SWEEP_SECONDS=3600`), alternating, on the system of `system.py`.

    python -m benchmarks.idle [SECONDS] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import RESULTS_DIR
from benchmarks.load import CpuWatch, pids_named, process_tree
from benchmarks.servers import free_port, serving
from benchmarks.system import MEDIA_DIR, prepare_database, rabbitmq_vhost, system_env

SETTLE_SECONDS = 5  # after /health answers: startup's own work is not idle
VARIANTS = {"import sweep at its default period": None, "import sweep off": "3600"}


async def idle_cpu(sweep_seconds: str | None, seconds: float) -> dict[str, float]:
    port = free_port()
    env = system_env(port, "bench-idle:")
    if sweep_seconds is not None:
        env["STOCKROOM_IMPORT_SWEEP_SECONDS"] = sweep_seconds
    command = [str(Path(sys.executable).parent / "stockroom"), "serve", "--host", "127.0.0.1"]
    async with serving(
        [*command, "--port", str(port)], env, RESULTS_DIR / "idle-api.log", port
    ) as (_url, api):
        await asyncio.sleep(SETTLE_SECONDS)
        watch = CpuWatch(
            {"api": lambda: process_tree(api.pid), "postgres": lambda: pids_named("postgres")}
        )
        watch.start()
        await asyncio.sleep(seconds)
        return watch.stop(seconds)


async def compare(seconds: float, rounds: int) -> dict[str, list[dict[str, float]]]:
    MEDIA_DIR.mkdir(parents=True, exist_ok=True)
    await prepare_database()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with rabbitmq_vhost():
        for _ in range(rounds):
            for name, sweep in VARIANTS.items():
                samples[name].append(await idle_cpu(sweep, seconds))
    return samples


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    samples = asyncio.run(compare(seconds, rounds))
    table = Table(title=f"An idle API process, % of one core over {seconds:g} s, {rounds} rounds")
    for column in ("variant", "API (median)", "PostgreSQL (median)", "API rounds"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, runs in samples.items():
        table.add_row(
            name,
            f"{statistics.median(run['api'] for run in runs):.2f}",
            f"{statistics.median(run['postgres'] for run in runs):.2f}",
            ", ".join(f"{run['api']:.2f}" for run in runs),
        )
    Console(width=110).print(table)


if __name__ == "__main__":
    main()

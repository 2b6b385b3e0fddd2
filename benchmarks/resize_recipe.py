"""Stockroom's resize recipe against libvips' thumbnail, one process, one libvips thread:
CPU per image, output bytes and what the faster decode costs in quality, on the corpus.

`same` is libvips' `thumbnail_buffer`, which decodes a JPEG at 1/2, 1/4 or 1/8 scale only
while a factor of two is left for its final reduce; `recipe` decodes at the smallest of those
scales that still covers the result (`benchmarks/bare.py`, byte-equal to `process()`).
Quality: each output, encoded as Stockroom encodes it, against a reference made from the
whole decode with a Lanczos3 reduce; PSNR in dB over every pixel, higher is closer.

`.venv/bin/python -m benchmarks.resize_recipe` (about a minute; builds the corpus once).
"""

from __future__ import annotations

import math
import statistics
import time

import pyvips
from rich.console import Console
from rich.table import Table

from benchmarks.bare import FIT_800, JPEG_QUALITY, Shape, run_loop
from benchmarks.corpus import load_or_build

LOOPS = ("same", "recipe")
ROUNDS = 2


def _psnr(output: bytes, reference: pyvips.Image) -> float:
    image = pyvips.Image.new_from_buffer(output, "")
    error = ((image.cast("float") - reference.cast("float")) ** 2).avg()
    return 99.0 if error == 0 else 10 * math.log10(255**2 / error)


def main(shape: Shape = FIT_800) -> None:
    pyvips.concurrency_set(1)
    corpus = load_or_build(log=False)
    sources = [corpus.path(name).read_bytes() for name in corpus.images]
    cpu_ms: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    outputs: dict[str, list[bytes]] = {}
    for _ in range(ROUNDS):  # alternated, so a noisy neighbour hits both
        for loop in LOOPS:
            started = time.process_time()
            outputs[loop] = [run_loop(data, loop, shape) for data in sources]
            cpu_ms[loop].append((time.process_time() - started) * 1000 / len(sources))
    psnr: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    for index, data in enumerate(sources):
        whole = pyvips.Image.new_from_buffer(data, "")
        size = pyvips.Image.new_from_buffer(outputs["same"][index], "")
        reference = whole.resize(size.width / whole.width, vscale=size.height / whole.height)
        for loop in LOOPS:
            psnr[loop].append(_psnr(outputs[loop][index], reference))
    loss = sorted(a - b for a, b in zip(psnr["same"], psnr["recipe"], strict=True))
    table = Table(
        title=f"Resize recipe, {shape.name}, {len(sources)} corpus photos, JPEG q"
        f"{JPEG_QUALITY}, 1 process, 1 libvips thread"
    )
    for column in ("loop", "CPU ms/image (rounds)", "kB/image", "PSNR median dB", "PSNR min dB"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for loop in LOOPS:
        table.add_row(
            loop,
            ", ".join(f"{ms:.1f}" for ms in cpu_ms[loop]),
            f"{sum(map(len, outputs[loop])) / len(sources) / 1000:.1f}",
            f"{statistics.median(psnr[loop]):.2f}",
            f"{min(psnr[loop]):.2f}",
        )
    console = Console()
    console.print(table)
    cpu = statistics.mean(cpu_ms["recipe"]) / statistics.mean(cpu_ms["same"])
    console.print(
        f"recipe / same CPU: {cpu:.2f}; PSNR lost per image: median {statistics.median(loss):.2f}"
        f" dB, 90th percentile {loss[int(0.9 * (len(loss) - 1))]:.2f} dB, worst {loss[-1]:.2f} dB"
    )


if __name__ == "__main__":
    main()

"""The bare libvips loop every pipeline ratio compares with: `pyvips.Image.thumbnail_buffer`
over the corpus bytes in memory, in a pool of processes with one libvips thread each
(`VIPS_CONCURRENCY=1`, `BENCH_BARE_VIPS_CONCURRENCY`), the same files and operation as
Stockroom. Four loops:

* `naive`: `thumbnail_buffer(size="down")` + `jpegsave_buffer(Q=quality)`, libvips' defaults;
* `same`: the same thumbnail + Stockroom's JPEG save options (`SAVE_OPTIONS`, copied from
  `_encode` in src/stockroom/pipeline/operations.py: Huffman-optimised, metadata stripped,
  baseline): the anchor of the targets;
* `recipe`: Stockroom's resize recipe in bare libvips: a JPEG decoded at the smallest 1/2,
  1/4 or 1/8 scale that covers the result (`shrink`), then `thumbnail_image` to the size
  libvips' thumbnail gives; the same save options. Checked byte for byte against
  `process()`. Where no such scale exists (fit 2048 on photos under 4096 px) it is `same`;
* `process`: `stockroom.pipeline.operations.process()` itself, which adds the header
  inspection (`_inspect`) and, in the default pipeline, the never-larger fallback.

The targets hold against `same`, the loop the issue defines; `recipe` tells how much of the
distance is Stockroom's overhead and how much its faster decode.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pyvips

from benchmarks.load import CpuWatch, process_tree

JPEG_QUALITY = 50  # Stockroom's default `jpeg_quality`
MAX_PIXELS = 50_000_000  # Stockroom's default `max_image_pixels`
# Stockroom's JPEG and AVIF save options (operations.py `_encode`).
SAVE_OPTIONS: dict[str, Any] = {"optimize_coding": True, "keep": "none"}
AVIF_OPTIONS: dict[str, Any] = {"compression": "av1", "effort": 2, "keep": "none"}
LOOPS = {
    "naive": "naive loop (thumbnail + plain jpegsave)",
    "same": "same-options loop (thumbnail + Stockroom's save options)",
    "recipe": "Stockroom's recipe loop (its decode scale + save options)",
    "process": "Stockroom's process()",
}


@dataclass(frozen=True, slots=True)
class Shape:
    """What each image goes through: fit in `box` x `box`, never enlarged, JPEG."""

    name: str
    box: int
    operations: tuple[dict[str, Any], ...] | None  # for POST /jobs; None: the default pipeline

    def operations_json(self) -> list[dict[str, Any]] | None:
        return None if self.operations is None else [dict(op) for op in self.operations]


DEFAULT_SHAPE = Shape("fit 2048 (default pipeline)", 2048, None)
FIT_800 = Shape("fit 800x800", 800, ({"op": "resize", "width": 800, "height": 800},))
SHAPES = {shape.name: shape for shape in (DEFAULT_SHAPE, FIT_800)}

_DATA: list[bytes] = []


def _init(paths: list[str]) -> None:
    _DATA[:] = [Path(p).read_bytes() for p in paths]


def run_loop(data: bytes, loop: str, shape: Shape, quality: int = JPEG_QUALITY) -> bytes:
    """One image through one loop; the encoded output."""
    if loop == "process":
        from stockroom.domain.operations import parse_operations_json
        from stockroom.pipeline.operations import process

        ops = parse_operations_json(shape.operations_json()) if shape.operations else None
        return process(data, ops, jpeg_quality=quality, max_pixels=MAX_PIXELS).data
    if loop == "naive":
        image = pyvips.Image.thumbnail_buffer(data, shape.box, height=shape.box, size="down")
        return bytes(image.jpegsave_buffer(Q=quality))
    if loop == "recipe":
        return bytes(_recipe(data, shape.box).jpegsave_buffer(Q=quality, **SAVE_OPTIONS))
    image = pyvips.Image.thumbnail_buffer(
        data, shape.box, height=shape.box, size="down", option_string="fail_on=error"
    )
    return bytes(image.jpegsave_buffer(Q=quality, **SAVE_OPTIONS))


def _recipe(data: bytes, box: int) -> pyvips.Image:
    """Fit in `box` x `box` from a JPEG decoded at 1/8, 1/4 or 1/2 scale when that still
    covers the result (the corpus is JPEG, upright: no EXIF orientation)."""
    header = pyvips.Image.new_from_buffer(data, "")
    shrink = max(header.width / box, header.height / box, 1.0)
    factor = next((f for f in (8, 4, 2) if shrink >= f), 1)
    if factor == 1:
        return pyvips.Image.thumbnail_buffer(
            data, box, height=box, size="down", option_string="fail_on=error"
        )
    width, height = round(header.width / shrink), round(header.height / shrink)
    image = pyvips.Image.new_from_buffer(
        data, "", shrink=factor, access="sequential", fail_on="error"
    )
    return image.thumbnail_image(max(width, 1), height=max(height, 1), size="force")


def _one(job: tuple[int, str, str]) -> tuple[float, int]:
    index, loop, shape = job
    started = time.perf_counter()
    out = run_loop(_DATA[index], loop, SHAPES[shape])
    return time.perf_counter() - started, len(out)


def _recipe_as_process(job: tuple[int, str]) -> bool:
    index, shape = job
    return run_loop(_DATA[index], "recipe", SHAPES[shape]) == run_loop(
        _DATA[index], "process", SHAPES[shape]
    )


@dataclass(frozen=True, slots=True)
class BareResult:
    loop: str
    shape: str
    processes: int
    images: int
    seconds: float
    per_image_ms: list[float]
    bytes_out: int
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def bytes_per_image(self) -> float:
        return self.bytes_out / self.images


class BarePool:
    """A pool of `processes` spawned processes holding the files' bytes, kept between
    windows (`run` blocks: call it in a thread from async code)."""

    def __init__(self, paths: list[Path], processes: int) -> None:
        self.paths = paths
        self.processes = processes
        # inherited by the spawned children
        os.environ["VIPS_CONCURRENCY"] = os.environ.get("BENCH_BARE_VIPS_CONCURRENCY", "1")
        context = multiprocessing.get_context("spawn")
        self._pool = context.Pool(processes, initializer=_init, initargs=([str(p) for p in paths],))
        warm = [
            (i % len(paths), loop, shape) for i in range(4) for loop in LOOPS for shape in SHAPES
        ]
        self._pool.map(_one, warm * processes, chunksize=1)  # imports, first decodes

    def __enter__(self) -> BarePool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.terminate()
        self._pool.join()

    def run(self, loop: str, shape: Shape, rounds: int) -> BareResult:
        """The files `rounds` times through `loop`, images/s and output bytes."""
        jobs = [(i, loop, shape.name) for i in range(len(self.paths))] * rounds
        watch = CpuWatch({"bare": lambda: process_tree(os.getpid())})
        watch.start()
        started = time.perf_counter()
        results = self._pool.map(_one, jobs, chunksize=1)
        seconds = time.perf_counter() - started
        cpu = watch.stop(seconds)
        return BareResult(
            loop=loop,
            shape=shape.name,
            processes=self.processes,
            images=len(jobs),
            seconds=seconds,
            per_image_ms=[t * 1000 for t, _ in results],
            bytes_out=sum(size for _, size in results),
            cpu=cpu,
        )

    def recipe_as_process(self, shape: Shape) -> bool:
        """True when the recipe loop's bytes equal process()'s on every file."""
        jobs = [(i, shape.name) for i in range(len(self.paths))]
        return all(self._pool.map(_recipe_as_process, jobs))


def _avif_chain(path: str, degrees: float, box: int) -> dict[str, float]:
    """Stockroom's `rotate, force_resize, convert avif` recipe in bare libvips, in a process
    of its own: times of the pixels (decode, rotate, resize) and of the AVIF encode alone."""
    started = time.perf_counter()
    image = pyvips.Image.new_from_file(path, access="random")
    image = image.bandjoin(255).copy(interpretation=image.interpretation)
    image = image.rotate(degrees, background=[0] * image.bands)
    image = image.thumbnail_image(box, height=box, size="force").copy_memory()
    pixels_s = time.perf_counter() - started
    hwm_pixels = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu = time.perf_counter(), time.process_time()
    out = image.heifsave_buffer(Q=JPEG_QUALITY, **AVIF_OPTIONS)
    encode_s, encode_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    megapixels = image.width * image.height / 1e6
    return {
        "pixels_ms": round(pixels_s * 1000, 1),
        "encode_ms": round(encode_s * 1000, 1),
        "encode_cpu_ms": round(encode_cpu_s * 1000, 1),
        "output_megapixels": round(megapixels, 2),
        "encode_ms_per_megapixel": round(encode_s * 1000 / megapixels, 1),
        "encode_cpu_ms_per_megapixel": round(encode_cpu_s * 1000 / megapixels, 1),
        "bytes_out": len(out),
        "peak_mb_before_encode": round(hwm_pixels, 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def bare_avif(path: Path, degrees: float, box: int) -> dict[str, float]:
    """`_avif_chain` in a fresh process with one libvips thread (its peak RSS is its own)."""
    os.environ["VIPS_CONCURRENCY"] = os.environ.get("BENCH_BARE_VIPS_CONCURRENCY", "1")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, float] = pool.apply(_avif_chain, (str(path), degrees, box))
    return result

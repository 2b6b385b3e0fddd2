"""Untrusted bytes against libvips: blocked loaders, and decompression bombs of every allowed
format refused from the header, before decoding and without the memory to decode them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import pyvips
from tests.support import bombs
from tests.support.images import photo_bytes

from stockroom.domain.errors import TooManyPixels
from stockroom.domain.operations import Operation, Rotate
from stockroom.pipeline.operations import ProcessedImage, process

MAX_PIXELS = 50_000_000  # the default `max_image_pixels`
UNTRUSTED, BLOCKED = 16, 32  # VipsOperationFlags
ALLOWED_FAMILIES = ("Jpeg", "Png", "Webp", "Nsgif", "Tiff", "Heif")
SVG = b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>"
HEADER_BOMBS: dict[str, Callable[[], bytes]] = {
    "png": bombs.png_bomb,
    "jpeg": bombs.jpeg_bomb,
    "webp": bombs.webp_bomb,
    "webp-vp8x": bombs.webp_vp8x_bomb,
    "gif": bombs.gif_bomb,
    "tiff": bombs.tiff_bomb,
    "heif": bombs.heif_bomb,
}
# Growth of peak RSS allowed while the bombs run. Refused from the header, they add a few MB;
# decoded, the 1.2 GB PNG alone streams through far more (more with more cores).
MAX_GROWTH_MB = 64
MODES = ("default", "explicit")


def run(data: bytes, ops: Sequence[Operation] | None = None, **limits: int) -> ProcessedImage:
    return process(data, ops, jpeg_quality=50, max_pixels=limits.get("max_pixels", MAX_PIXELS))


@pytest.fixture(scope="session")
def bomb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every bomb as a file, written once per session (about a second, most of it the PNG)."""
    root = tmp_path_factory.mktemp("bombs")
    for name, make in HEADER_BOMBS.items():
        (root / f"{name}.bomb").write_bytes(make())
    bombs.zeros_png(root / "zeros.bomb", bands=3)
    return root


def loader_flags() -> dict[str, int]:
    """Every concrete libvips loader class, by type name, with its operation flags."""
    found: dict[str, int] = {}

    def visit(gtype: int, _a: object, _b: object) -> object:
        try:
            operation = pyvips.Operation.new_from_name(pyvips.nickname_find(gtype))
        except pyvips.Error:  # abstract
            operation = None
        if operation is not None:
            flags = pyvips.vips_lib.vips_operation_get_flags(operation.pointer)
            found[pyvips.type_name(gtype)] = int(flags)
        pyvips.type_map(gtype, visit)
        return pyvips.ffi.NULL

    pyvips.type_map(pyvips.type_from_name("VipsForeignLoad"), visit)
    return found


def test_untrusted_loaders_are_refused_even_when_called_directly(tmp_path: Path) -> None:
    matrix = tmp_path / "m.csv"
    matrix.write_text("1,2\n3,4\n")
    with pytest.raises(pyvips.Error, match="operation is blocked"):
        pyvips.Image.svgload_buffer(SVG)
    with pytest.raises(pyvips.Error, match="operation is blocked"):
        pyvips.Image.csvload(str(matrix))
    with pytest.raises(pyvips.Error, match="not in a known format"):
        pyvips.Image.new_from_buffer(SVG, "")


def test_only_the_allowed_formats_loaders_are_unblocked() -> None:
    flags = loader_flags()
    untrusted = [name for name, flag in flags.items() if flag & UNTRUSTED]
    assert "VipsForeignLoadSvgBuffer" in untrusted  # this build has untrusted loaders to block
    open_ = {name for name, flag in flags.items() if not flag & BLOCKED}
    assert not set(untrusted) & open_
    assert {"VipsForeignLoadMatrixFile", "VipsForeignLoadUhdrBuffer"} <= flags.keys() - open_
    for family in ALLOWED_FAMILIES:
        assert {f"VipsForeignLoad{family}{form}" for form in ("File", "Buffer", "Source")} <= open_
    assert all(name.startswith(tuple(f"VipsForeignLoad{f}" for f in ALLOWED_FAMILIES))
               for name in open_)  # fmt: skip


@pytest.mark.parametrize("ops", [None, [Rotate(90)]], ids=["default", "explicit"])
@pytest.mark.parametrize("fmt", HEADER_BOMBS)
def test_header_bombs_are_refused_before_decoding(
    bomb_dir: Path, fmt: str, ops: list[Operation] | None
) -> None:
    data = (bomb_dir / f"{fmt}.bomb").read_bytes()
    assert len(data) < 4096
    with pytest.raises(TooManyPixels) as caught:
        run(data, ops)
    assert caught.value.code == "too_many_pixels"


def test_a_real_heif_over_the_limit_is_refused() -> None:
    with pytest.raises(TooManyPixels):
        run(photo_bytes(300, 300, "avif"), max_pixels=10_000)


def test_a_real_png_bomb_is_refused(bomb_dir: Path) -> None:
    data = (bomb_dir / "zeros.bomb").read_bytes()
    assert pyvips.Image.new_from_buffer(data, "").width == 20_000
    with pytest.raises(TooManyPixels, match="20000x20000"):
        run(data)


_MEASURE = """
import json, sys
from pathlib import Path
from stockroom.domain.errors import StockroomError
from stockroom.domain.operations import Rotate
from stockroom.pipeline.operations import process

def peak_mb():  # this process image's own high-water mark (ru_maxrss survives exec)
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024

files = sorted(Path(sys.argv[1]).glob("*.bomb"))
data = {path.stem: path.read_bytes() for path in files}
before = peak_mb()
codes = {}
for name, payload in data.items():
    for mode, ops in (("default", None), ("explicit", [Rotate(90)])):
        try:
            out = process(payload, ops, jpeg_quality=50, max_pixels=50_000_000)
            codes[f"{name}/{mode}"] = f"decoded {out.width}x{out.height}"
        except StockroomError as exc:
            codes[f"{name}/{mode}"] = exc.code
print(json.dumps({"codes": codes, "before": before, "after": peak_mb()}))
"""


def test_bombs_fail_without_the_memory_to_decode_them(bomb_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(bomb_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    names = [f"{name}/{mode}" for name in [*HEADER_BOMBS, "zeros"] for mode in MODES]
    assert report["codes"] == dict.fromkeys(names, "too_many_pixels")
    assert report["after"] - report["before"] < MAX_GROWTH_MB, report
    assert report["after"] < 300, report


def test_an_idat_longer_than_the_header_says_is_cut_at_the_header() -> None:
    data = bombs.png_with_long_idat(64, 64, inflated=100_000_000)
    result = run(data, [Rotate(90)])
    assert (result.width, result.height) == (64, 64)


def test_only_the_first_frame_of_a_long_gif_is_loaded() -> None:
    data = bombs.gif(10, 10, frames=10_000)
    assert pyvips.Image.new_from_buffer(data, "").get("n-pages") == 10_000
    for ops in (None, [Rotate(90)]):
        result = run(data, ops, max_pixels=100)  # ten thousand frames would be 1 MP
        assert (result.width, result.height) == (10, 10)


def test_only_the_first_page_of_a_multipage_tiff_is_loaded() -> None:
    data = bombs.multipage_tiff(pages=200, side=500)
    for ops in (None, [Rotate(90)]):
        result = run(data, ops, max_pixels=500 * 500)
        assert (result.width, result.height) == (500, 500)

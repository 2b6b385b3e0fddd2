"""Large AVIF outputs are written as grids of tiles (pipeline/avif_grid.py): the encoder is
only ever handed one tile, and the file opens in libheif (libvips) and in libavif (Pillow's
decoder, the one Chrome and Safari use) as the whole image."""

from __future__ import annotations

import io
import math
import struct
from typing import Any

import pytest
import pyvips
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from stockroom.domain.operations import Convert, ForceResize, Operation, Rotate
from stockroom.pipeline import avif_grid
from stockroom.pipeline.avif_grid import GridError, encode_grid, grid_tile_size
from stockroom.pipeline.operations import process
from tests.support.images import photo_bytes, photo_like

SAVE: dict[str, Any] = {"Q": 80, "compression": "av1", "effort": 2, "keep": "none"}


def meta_item_types(data: bytes) -> list[bytes]:
    """The item types an AVIF file declares (its `infe` boxes), read without avif_grid."""
    position = 0
    while position < len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"meta":
            meta = data[position : position + size]
            types = []
            start = meta.find(b"infe")
            while start != -1:
                version = meta[start + 4]
                id_size = 2 if version == 2 else 4
                types.append(meta[start + 8 + id_size + 2 : start + 8 + id_size + 6])
                start = meta.find(b"infe", start + 4)
            return types
        position += size
    raise AssertionError("no meta box")


def mean_difference(a: pyvips.Image, b: pyvips.Image) -> float:
    return float((a.cast("float") - b.cast("float")).abs().avg())


def libavif_decode(data: bytes) -> pyvips.Image:
    with Image.open(io.BytesIO(data)) as picture:
        picture.load()
        mode = picture.mode
        raw = picture.tobytes()
        size = picture.size
    return pyvips.Image.new_from_memory(raw, size[0], size[1], len(mode), "uchar")


@pytest.mark.parametrize(
    ("width", "height", "alpha"),
    [
        (2400, 1800, False),  # even: 4:2:0 tiles
        (2401, 1799, True),  # odd: full-chroma tiles, and an alpha grid
    ],
)
def test_a_grid_opens_in_libheif_and_libavif_as_the_whole_image(
    width: int, height: int, alpha: bool
) -> None:
    image = photo_like(width, height, alpha=alpha).copy_memory()
    tile_size = grid_tile_size(width, height, alpha=alpha)
    assert tile_size is not None

    data = encode_grid(image, tile_size, **SAVE)

    assert meta_item_types(data).count(b"grid") == (2 if alpha else 1)
    whole = pyvips.Image.new_from_buffer(bytes(image.heifsave_buffer(**SAVE)), "")
    for decoded in (pyvips.Image.new_from_buffer(data, ""), libavif_decode(data)):
        assert (decoded.width, decoded.height, decoded.bands) == (width, height, image.bands)
        # As close to the source as the same image encoded whole (tile edges cost nothing).
        assert mean_difference(decoded, image) < mean_difference(whole, image) * 1.15 + 0.1
        if alpha:
            source_alpha, decoded_alpha = image[3], decoded[3]
            assert mean_difference(decoded_alpha, source_alpha) < 1.0


def test_the_encoder_is_only_ever_handed_one_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    handed: list[tuple[int, int, dict[str, Any]]] = []
    original = pyvips.Image.heifsave_buffer

    def saving(self: pyvips.Image, **options: Any) -> Any:
        handed.append((self.width, self.height, options))
        return original(self, **options)

    monkeypatch.setattr(pyvips.Image, "heifsave_buffer", saving)
    image = photo_like(2101, 2301).copy_memory()  # odd both ways

    data = encode_grid(image, (512, 512), **SAVE)

    assert len(handed) == 5 * 5
    assert {(w, h) for w, h, _ in handed} == {(512, 512)}
    assert all(options["subsample_mode"] == "off" for _, _, options in handed)
    assert pyvips.Image.new_from_buffer(data, "").width == 2101


def test_a_large_avif_job_is_written_as_a_grid_and_a_small_one_whole() -> None:
    source = photo_bytes(3000, 2000)
    turned: list[Operation] = [Rotate(30), ForceResize(2400, 2400), Convert("avif")]

    large = process(source, turned, jpeg_quality=80, max_pixels=50_000_000)
    small = process(source, [ForceResize(1200, 1200), Convert("avif")],
                    jpeg_quality=80, max_pixels=50_000_000)  # fmt: skip

    assert meta_item_types(large.data).count(b"grid") == 2  # colour and alpha
    assert (large.width, large.height) == (2400, 2400)
    assert libavif_decode(large.data).bands == 4
    assert b"grid" not in meta_item_types(small.data)
    assert (small.width, small.height) == (1200, 1200)


@given(width=st.integers(1, 40_000), height=st.integers(1, 40_000), alpha=st.booleans())
def test_tiles_are_miaf_sized_few_enough_for_libheif_and_barely_padded(
    width: int, height: int, alpha: bool
) -> None:
    tile_size = grid_tile_size(width, height, alpha=alpha)

    if width * height <= avif_grid.GRID_ABOVE_PIXELS:
        assert tile_size is None
        return
    if tile_size is None:  # only a side too thin for 64-pixel tiles is written whole
        assert min(width, height) <= 56
        return
    tile_width, tile_height = tile_size
    assert tile_width % 8 == 0
    assert tile_height % 8 == 0
    assert min(tile_width, tile_height) >= 64
    columns, rows = math.ceil(width / tile_width), math.ceil(height / tile_height)
    assert columns * rows * (2 if alpha else 1) + (2 if alpha else 1) <= 256
    # What the grid crops away: under 8 pixels per tile, or one tile's minimum of 64.
    assert columns * tile_width - width < max(8 * columns, 64)
    assert rows * tile_height - height < max(8 * rows, 64)


@settings(max_examples=15, deadline=None)
@given(width=st.integers(65, 260), height=st.integers(65, 260), alpha=st.booleans())
def test_any_grid_layout_decodes_to_its_image(width: int, height: int, alpha: bool) -> None:
    image = photo_like(width, height, alpha=alpha, seed=width).copy_memory()
    tile_size = (64, 64) if min(width, height) % 3 else (128, 66)

    data = encode_grid(image, tile_size, **{**SAVE, "Q": 95})

    for decoded in (pyvips.Image.new_from_buffer(data, ""), libavif_decode(data)):
        assert (decoded.width, decoded.height, decoded.bands) == (width, height, image.bands)
        assert mean_difference(decoded, image) < 3


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (photo_bytes(64, 64), "wrong size"),  # a JPEG's first bytes read as a box
        (struct.pack(">I4s4sI", 16, b"ftyp", b"avif", 0), "no meta box"),
    ],
)
def test_a_tile_that_is_not_an_avif_file_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(GridError, match=problem):
        avif_grid._read_tile(data)

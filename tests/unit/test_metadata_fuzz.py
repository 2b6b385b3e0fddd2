"""Fuzzing the container parsers of `strip_metadata`, which read untrusted bytes: whatever the
input, they return bytes or None, never raise and never hang."""

from __future__ import annotations

import pytest
import pyvips
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stockroom.pipeline.metadata import strip_metadata
from tests.support.images import Format, photo_bytes

FORMATS: tuple[Format, ...] = ("jpeg", "png", "webp")
# Small photos with EXIF (the orientation tag writes it): a JPEG with APP1, a PNG with eXIf,
# an extended WebP with an EXIF chunk.
VALID = {fmt: photo_bytes(32, 24, fmt, orientation=1) for fmt in FORMATS}
MAGIC = {"jpeg": b"\xff\xd8", "png": b"\x89PNG\r\n\x1a\n", "webp": b"RIFF\x00\x00\x00\x00WEBP"}
FUZZ = settings(max_examples=300, deadline=500)

EDITS = ("flip", "insert", "delete", "truncate")


def mutate(data: bytes, draw: st.DataObject) -> bytes:
    """One to four edits of `data`, each at a position drawn over the whole current length."""
    out = bytearray(data)
    for kind in draw.draw(st.lists(st.sampled_from(EDITS), min_size=1, max_size=4)):
        at = draw.draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= draw.draw(st.integers(1, 255))
        elif kind == "insert":
            out[at:at] = draw.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[at : at + draw.draw(st.integers(1, 64))]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


def assert_stripped_safely(data: bytes, fmt: str) -> None:
    result = strip_metadata(data, fmt)
    assert result is None or isinstance(result, bytes)


@FUZZ
@given(fmt=st.sampled_from(FORMATS), data=st.binary(max_size=512))
def test_arbitrary_bytes(fmt: str, data: bytes) -> None:
    assert_stripped_safely(data, fmt)


@FUZZ
@given(fmt=st.sampled_from(FORMATS), tail=st.binary(max_size=512))
@example(fmt="jpeg", tail=b"\xff\xda\x00\x02abc")  # a scan with no 0xFF after it: ValueError
def test_arbitrary_bytes_behind_the_right_signature(fmt: Format, tail: bytes) -> None:
    assert_stripped_safely(MAGIC[fmt] + tail, fmt)


@FUZZ
@given(fmt=st.sampled_from(FORMATS), draw=st.data())
def test_mutated_valid_images(fmt: Format, draw: st.DataObject) -> None:
    assert_stripped_safely(mutate(VALID[fmt], draw), fmt)


def test_a_jpeg_cut_inside_its_last_scan_is_not_editable() -> None:
    """Found by `test_mutated_valid_images` (truncate at byte 795): `data.index` raised
    ValueError when no 0xFF followed the cut, where None was due."""
    data = VALID["jpeg"]
    last_in_scan = data.rindex(b"\xff", 0, len(data) - 2)  # the one before the end of image
    assert strip_metadata(data[: last_in_scan + 2], "jpeg") is None
    assert strip_metadata(data[:795], "jpeg") is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_valid_image_keeps_its_pixels_and_loses_its_exif(fmt: Format) -> None:
    source = pyvips.Image.new_from_buffer(VALID[fmt], "")
    assert "exif-data" in source.get_fields()
    stripped = strip_metadata(VALID[fmt], fmt)
    assert stripped is not None
    image = pyvips.Image.new_from_buffer(stripped, "", fail_on="error")
    assert (image.width, image.height) == (source.width, source.height)
    assert "exif-data" not in image.get_fields()
    assert (image == source).min() == 255  # every pixel of every band is unchanged

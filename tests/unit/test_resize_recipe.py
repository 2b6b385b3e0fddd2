"""The resize recipe (`_thumbnail` in pipeline/operations.py): a JPEG is decoded at the
smallest 1/2, 1/4 or 1/8 scale that still covers the result, then reduced; the result has
libvips' own thumbnail size and, up to a little resampling noise, its pixels."""

from __future__ import annotations

from typing import Any

import pytest
import pyvips

from stockroom.domain.operations import ForceResize, Operation, Resize, Rotate
from stockroom.pipeline.operations import ProcessedImage, process
from tests.support.images import photo_bytes


def run(data: bytes, ops: list[Operation] | None) -> ProcessedImage:
    return process(data, ops, jpeg_quality=90, max_pixels=50_000_000)


@pytest.fixture
def shrinks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `shrink` of every load (1: a plain load or libvips' own thumbnail)."""
    seen: list[int] = []
    original = pyvips.Image.new_from_buffer

    def loading(data: Any, options: str, **kwargs: Any) -> pyvips.Image:
        if kwargs.get("access") == "sequential" and "fail_on" in kwargs and "shrink" in kwargs:
            seen.append(kwargs["shrink"])
        return original(data, options, **kwargs)

    monkeypatch.setattr(pyvips.Image, "new_from_buffer", staticmethod(loading))
    return seen


@pytest.mark.parametrize(
    ("size", "box", "factor"),
    [
        ((6400, 4800), 800, 8),  # 8x: the largest JPEG scale
        ((4000, 3000), 800, 4),  # 5x: libvips' thumbnail would decode at 1/2
        ((1800, 1200), 800, 2),  # 2.25x: libvips' thumbnail would decode it whole
        ((1500, 1000), 800, 1),  # 1.9x: decoded whole
    ],
)
def test_a_jpeg_is_decoded_at_the_smallest_scale_covering_the_result(
    size: tuple[int, int], box: int, factor: int, shrinks: list[int]
) -> None:
    result = run(photo_bytes(*size), [Resize(box, box)])

    assert shrinks == ([factor] if factor > 1 else [])
    assert max(result.width, result.height) == box


@pytest.mark.parametrize(
    ("size", "orientation", "ops"),
    [
        ((4001, 2999), 1, [Resize(800, 800)]),
        ((2999, 4001), 1, [Resize(777, 777)]),
        ((4001, 2999), 6, [Resize(800, 800)]),  # turned upright: the box fits the turned photo
        ((4000, 3000), 1, [ForceResize(900, 300)]),
        ((4000, 3000), 8, [ForceResize(300, 900)]),
        ((4000, 3000), 1, [Resize(1000, 1000), Rotate(90)]),
        ((5000, 3001), 1, None),  # the default pipeline: fit in 2048
    ],
)
def test_the_result_has_libvips_thumbnail_size_and_pixels(
    size: tuple[int, int], orientation: int, ops: list[Operation] | None
) -> None:
    source = photo_bytes(*size, orientation=orientation)
    first = ops[0] if ops else Resize(2048, 2048)
    assert isinstance(first, Resize | ForceResize)
    expected = pyvips.Image.thumbnail_buffer(
        source, first.width, height=first.height,
        size="force" if isinstance(first, ForceResize) else "down",
    ).copy_memory()  # fmt: skip
    if ops and any(isinstance(op, Rotate) for op in ops):
        expected = expected.rot90()
    # libvips' thumbnail encoded as the result is: the error of the encode alone
    reencoded = pyvips.Image.new_from_buffer(expected.jpegsave_buffer(Q=90), "")

    result = run(source, ops)

    image = pyvips.Image.new_from_buffer(result.data, "")
    assert (image.width, image.height) == (expected.width, expected.height)
    encode_error = (reencoded.cast("int") - expected.cast("int")).abs().avg()
    error = (image.cast("int") - expected.cast("int")).abs().avg()
    assert error < encode_error + 1  # a mirrored or misplaced result is ~20 levels off

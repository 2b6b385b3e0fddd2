"""`sniff` tells an upload's type from its first bytes, as libvips would load it."""

from __future__ import annotations

import pytest
import pyvips
from hypothesis import given
from hypothesis import strategies as st

from stockroom.api.body_limit import BodySizeLimitMiddleware
from stockroom.domain.image_types import IMAGE_MEDIA_TYPES, SNIFF_BYTES, sniff
from tests.support.images import Format, photo_bytes

_EXPECTED: dict[Format, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "tiff": "image/tiff",
    "avif": "image/avif",
}


@pytest.mark.parametrize("fmt", list(_EXPECTED))
def test_every_format_the_pipeline_reads_is_told_from_its_head(fmt: Format) -> None:
    data = photo_bytes(16, 16, fmt)

    media_type = sniff(data[:SNIFF_BYTES])

    assert media_type == _EXPECTED[fmt]
    assert media_type in IMAGE_MEDIA_TYPES
    loader = pyvips.Image.new_from_buffer(data, "").get("vips-loader")
    assert loader.startswith(fmt if fmt != "avif" else "heif")


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"hello world",
        b"%PDF-1.7",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF, but audio
        b"\x00\x00\x00\x18ftypmp42",  # ISO media, but a video
        b"\xff\xd8",  # too short to be a JPEG
    ],
)
def test_what_is_no_image_is_none(head: bytes) -> None:
    assert sniff(head) is None


@given(st.binary(max_size=SNIFF_BYTES))
def test_any_bytes_give_a_known_type_or_none(head: bytes) -> None:
    assert sniff(head) in IMAGE_MEDIA_TYPES | {None}


def test_body_limits_go_by_exact_path_then_prefix() -> None:
    middleware = BodySizeLimitMiddleware(
        app=None,  # type: ignore[arg-type]  # limit_for never calls it
        max_bytes=10,
        limits={"/jobs/upload": 100, "/uploads/": 50},
    )

    assert middleware.limit_for("/jobs/upload") == 100
    assert middleware.limit_for("/jobs/upload-url") == 10
    assert middleware.limit_for("/uploads/abc") == 50
    assert middleware.limit_for("/products") == 10

"""Photo-like test images made with libvips, so tests and benchmarks need no binary fixtures.

Smooth gradients with soft blobs and a little grain compress and decode like photographs far
more than pure noise does (which no encoder can shrink) or flat colour (which every encoder can).
"""

from __future__ import annotations

import struct
import zlib
from typing import Literal

import pyvips

Format = Literal["jpeg", "png", "webp", "avif", "gif", "tiff"]


def photo_like(width: int, height: int, *, alpha: bool = False, seed: int = 0) -> pyvips.Image:
    """An sRGB uchar image of smooth colour fields, soft detail and grain (RGBA if `alpha`)."""
    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0], xy[1]
    phase = seed * 0.7
    red = 128 + 80 * ((x / max(width, 1) * 6.3 + phase).sin() * 57.3).sin()
    green = 60 + 150 * y / max(height, 1)
    blue = 128 + 60 * ((x + y) / max(width + height, 1) * 360 * 3 + phase * 57.3).cos()
    base = red.bandjoin([green, blue])
    # Soft detail: blurred noise, like foliage or texture out of focus.
    detail = pyvips.Image.gaussnoise(width, height, sigma=60, mean=0, seed=seed).gaussblur(2.5)
    grain = pyvips.Image.gaussnoise(width, height, sigma=4, mean=0, seed=seed + 1)
    image = (base + detail + grain).cast("uchar").copy(interpretation="srgb")
    if alpha:
        # Opaque centre, transparent corners: the alpha is really used.
        cx, cy = width / 2, height / 2
        distance = ((x - cx) ** 2 + (y - cy) ** 2) ** 0.5
        radius = min(width, height) / 2
        mask = (255 * (1 - (distance - radius * 0.7) / (radius * 0.3 + 1))).cast("uchar")
        image = image.bandjoin(mask.ifthenelse(mask, 0)).copy(interpretation="srgb")
    return image


def encode(image: pyvips.Image, fmt: Format, *, quality: int = 90) -> bytes:
    """The bytes of `image` in `fmt`; quality applies to the lossy formats."""
    if fmt == "jpeg":
        return bytes(image.jpegsave_buffer(Q=quality))
    if fmt == "png":
        return bytes(image.pngsave_buffer(compression=6))
    if fmt == "webp":
        return bytes(image.webpsave_buffer(Q=quality))
    if fmt == "avif":
        return bytes(image.heifsave_buffer(Q=quality, compression="av1", effort=0))
    if fmt == "gif":
        return bytes(image.gifsave_buffer())
    return bytes(image.tiffsave_buffer())


def photo_bytes(
    width: int,
    height: int,
    fmt: Format = "jpeg",
    *,
    quality: int = 90,
    alpha: bool = False,
    orientation: int | None = None,
    seed: int = 0,
) -> bytes:
    """A photo-like image already encoded; `orientation` writes an EXIF orientation tag."""
    image = photo_like(width, height, alpha=alpha, seed=seed)
    if orientation is not None:
        image = image.copy()
        image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return encode(image, fmt, quality=quality)


def huge_header_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels: a decompression bomb's shape."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first `keep` fraction of `data`: what a dropped download leaves behind."""
    return data[: int(len(data) * keep)]

"""Decompression bombs for every loader we allow, made cheaply.

Most are a tiny real image whose header is patched to declare billions of pixels: libvips
reads only the header before `process` refuses them, so the pixel data need not exist. The
real bomb (`zeros_png`) is written by libvips in strips and never held in memory.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pyvips

from tests.support.images import huge_header_png, photo_bytes

GIANT = 65_000  # a 16-bit field's worth: 65,000 x 65,000 is 4.2 gigapixels


def png_bomb() -> bytes:
    """IHDR claims GIANT x GIANT (CRC fixed); the IDAT holds a few bytes."""
    return huge_header_png(GIANT, GIANT)


def jpeg_bomb() -> bytes:
    """A 16x16 baseline JPEG whose SOF0 declares GIANT x GIANT."""
    data = bytearray(photo_bytes(16, 16, "jpeg"))
    sof = _jpeg_segment(data, 0xC0)
    data[sof + 5 : sof + 9] = struct.pack(">HH", GIANT, GIANT)  # height, then width
    return bytes(data)


def webp_bomb() -> bytes:
    """A simple lossy WebP: one VP8 key frame, 16x16 of data, declaring 16383 x 16383."""
    body = b"WEBP" + _giant_vp8_chunk()
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8x_bomb() -> bytes:
    """An extended (VP8X) WebP whose canvas and frame both declare 16383 x 16383."""
    canvas = b"\0" * 4 + (0x3FFF - 1).to_bytes(3, "little") * 2  # flags, reserved, size - 1
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(canvas)) + canvas + _giant_vp8_chunk()
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif(width: int, height: int, frames: int = 1) -> bytes:
    """A GIF whose logical screen and frames are `width` x `height`, built by hand.

    Each frame's data is a single pixel: a large frame is truncated, but libvips reads only
    the descriptors for the header (and the first frame only when decoding).
    """
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # 2-colour global table
    palette = b"\x00\x00\x00\xff\xff\xff"
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00" if frames > 1 else b""
    delay = b"!\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms, no transparency
    # A 1x1 frame at the origin: LZW minimum code size 2, codes clear, 0, end.
    frame = delay + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + palette + loop + frame * frames + b";"


def gif_bomb() -> bytes:
    """A GIF whose screen and frame are GIANT x GIANT, with one pixel of data."""
    return gif(GIANT, GIANT)


def tiff_bomb() -> bytes:
    """A one-strip 16x16 TIFF whose ImageWidth, ImageLength and RowsPerStrip say GIANT."""
    data = bytearray(photo_bytes(16, 16, "tiff"))
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    for index in range(count):
        entry = ifd + 2 + 12 * index
        tag, kind, _ = struct.unpack(order + "HHI", data[entry : entry + 8])
        if tag in (256, 257, 278):  # ImageWidth, ImageLength, RowsPerStrip
            value = struct.pack(order + "H", GIANT) + b"\0\0" if kind == 3 else b""
            data[entry + 8 : entry + 12] = value or struct.pack(order + "I", GIANT)
    return bytes(data)


def heif_bomb() -> bytes:
    """A 64x64 AVIF whose `ispe` (image spatial extent) box declares 30000 x 30000."""
    data = bytearray(photo_bytes(64, 64, "avif"))
    box = data.index(b"ispe")
    data[box + 8 : box + 16] = struct.pack(">II", 30_000, 30_000)  # after version and flags
    return bytes(data)


def zeros_png(path: Path, side: int = 20_000, bands: int = 3) -> Path:
    """A real `side` x `side` black PNG, written in strips: 400 MP at the default, 12 MB on
    disc and 1.2 GB decoded (compression 1: the fastest to write)."""
    pyvips.Image.black(side, side, bands=bands).pngsave(str(path), compression=1)
    return path


def png_with_long_idat(width: int = 64, height: int = 64, inflated: int = 200_000_000) -> bytes:
    """IHDR says `width` x `height` greyscale, but the IDAT inflates to `inflated` bytes."""
    packer = zlib.compressobj(9)
    block = b"\x00" * 1_000_000
    rows = b"".join(packer.compress(block) for _ in range(inflated // len(block)))
    rows += packer.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def multipage_tiff(pages: int = 200, side: int = 500) -> bytes:
    """A `pages`-page TIFF of `side` x `side` pages (50 MP in all at the default)."""
    tall = pyvips.Image.black(side, side * pages, bands=3).copy(interpretation="srgb")
    tall = tall.copy()
    tall.set_type(pyvips.GValue.gint_type, "page-height", side)
    return bytes(tall.tiffsave_buffer(compression="deflate"))


def _giant_vp8_chunk() -> bytes:
    """The VP8 chunk of a 16x16 lossy WebP, its key frame header patched to 16383 x 16383."""
    data = photo_bytes(16, 16, "webp")
    start = data.index(b"VP8 ")
    (size,) = struct.unpack("<I", data[start + 4 : start + 8])
    chunk = bytearray(data[start : start + 8 + size + (size & 1)])
    code = chunk.index(b"\x9d\x01\x2a")  # the key frame's start code, then width and height
    chunk[code + 3 : code + 7] = struct.pack("<HH", 0x3FFF, 0x3FFF)
    return bytes(chunk)


def _jpeg_segment(data: bytearray, marker: int) -> int:
    """The offset of the first `marker` segment's 0xFF byte."""
    pos = 2
    while data[pos + 1] != marker:
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return pos

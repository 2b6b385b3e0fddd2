"""Lossless metadata removal for JPEG, PNG and WebP, by dropping container segments.

Used when the source itself is returned (re-encoding would make it larger): EXIF, XMP, IPTC
and comments (GPS positions, camera serials) go; pixels, ICC profiles and transparency stay.
Anything after the end of the image (an appended archive, say) is dropped too.
"""

from __future__ import annotations

import struct

_JPEG_KEEP_APP = {0xE0, 0xEE}  # JFIF, Adobe (colour transform of CMYK/YCCK)
_PNG_KEEP = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP",
    b"sBIT", b"cICP", b"acTL", b"fcTL", b"fdAT",
}  # fmt: skip
_WEBP_DROP = {b"EXIF", b"XMP "}
_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04


def strip_metadata(data: bytes, fmt: str) -> bytes | None:
    """`data` without metadata, or None when the container is not well-formed enough to edit."""
    try:
        if fmt == "jpeg":
            return _strip_jpeg(data)
        if fmt == "png":
            return _strip_png(data)
        if fmt == "webp":
            return _strip_webp(data)
    except (IndexError, struct.error):
        return None
    return None


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == 0xE2:
        return payload.startswith(b"ICC_PROFILE\x00")
    return not (0xE1 <= marker <= 0xEF or marker == 0xFE) or marker in _JPEG_KEEP_APP


def _strip_jpeg(data: bytes) -> bytes | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    out = bytearray(b"\xff\xd8")
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            return None
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # end of image
            out += b"\xff\xd9"
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += bytes((0xFF, marker))
            continue
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        segment = data[pos : pos + length]
        if len(segment) != length or length < 2:
            return None
        if _keep_jpeg_segment(marker, segment[2:]):
            out += bytes((0xFF, marker)) + segment
        pos += length
        if marker == 0xDA:  # start of scan: copy entropy-coded data up to the next marker
            start = pos
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= len(data):
                    return None  # the scan runs to the end: truncated, no end of image
                if data[pos + 1] == 0x00 or 0xD0 <= data[pos + 1] <= 0xD7:
                    pos += 2
                    continue
                break
            out += data[start:pos]
    return None


def _strip_png(data: bytes) -> bytes | None:
    signature = b"\x89PNG\r\n\x1a\n"
    if not data.startswith(signature):
        return None
    out = bytearray(signature)
    pos = len(signature)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return None
        if kind in _PNG_KEEP:
            out += data[pos:end]
        pos = end
        if kind == b"IEND":
            return bytes(out)
    return None


def _strip_webp(data: bytes) -> bytes | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    (riff_size,) = struct.unpack("<I", data[4:8])
    body_end = min(len(data), 8 + riff_size)
    chunks = bytearray()
    pos = 12
    while pos + 8 <= body_end:
        kind = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + size + (size & 1)
        if end > body_end:
            return None
        chunk = bytearray(data[pos:end])
        if kind == b"VP8X":
            chunk[8] &= ~(_VP8X_EXIF | _VP8X_XMP) & 0xFF
        if kind not in _WEBP_DROP:
            chunks += chunk
        pos = end
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + bytes(chunks)

"""What kind of image a file is, told from its first bytes, never from its name or header.

Used where a file arrives (an upload) to refuse what is clearly not an image before it is
stored or queued; the pipeline's own sniffing (libvips' loader) still decides at processing
time, so a file with a valid signature but a corrupt body fails its job as `not_an_image` or
`decode_error`.
"""

from __future__ import annotations

# Media types an upload may declare (direct uploads) and the sniffer may answer.
IMAGE_MEDIA_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/avif", "image/heic"}
)
SNIFF_BYTES = 32  # what `sniff` needs to see

_HEIF_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevc": "image/heic",
    b"hevx": "image/heic",
    b"mif1": "image/heic",
    b"msf1": "image/heic",
}


def sniff(head: bytes) -> str | None:
    """The media type of an image starting with `head` (its first `SNIFF_BYTES` bytes, or
    the whole file when shorter), or None when it is none the pipeline can read."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(head[8:12])
    return None

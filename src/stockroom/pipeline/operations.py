"""Run image operations with libvips: the default product pipeline and explicit job operations.

Content is sniffed from the bytes, never from headers or names, and the pixel count is read
from the header before any pixel is decoded. Resizes shrink on load (`_thumbnail`), so a
50 MP JPEG is never decoded at full size when the result is small. Importing this module
blocks every libvips loader but the allowed formats' (see `block_other_loaders`) and turns
libvips' operation cache off (`disable_operation_cache`). Only page 0 of a multi-page GIF,
TIFF or HEIF is ever loaded: nothing here passes `n` or `page`. An AVIF output over
2048x2048 is written as a grid of tiles (`avif_grid.py`), so its encode memory is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pyvips

from stockroom.domain.errors import ImageDecodeError, NotAnImage, TooManyPixels
from stockroom.domain.operations import (
    Compress,
    Convert,
    ForceResize,
    ImageFormat,
    Operation,
    Resize,
    Rotate,
)
from stockroom.pipeline.avif_grid import encode_grid, grid_tile_size
from stockroom.pipeline.geometry import Placement, compose, has_free_angle, place
from stockroom.pipeline.metadata import strip_metadata

DEFAULT_BOX = 2048
# Loaders we accept, by libvips class; SVG, PDF, CSV, matrix and the rest are refused.
_LOADERS = {
    "VipsForeignLoadJpegBuffer": "jpeg",
    "VipsForeignLoadPngBuffer": "png",
    "VipsForeignLoadWebpBuffer": "webp",
    "VipsForeignLoadNsgifBuffer": "gif",
    "VipsForeignLoadGifBuffer": "gif",
    "VipsForeignLoadTiffBuffer": "tiff",
    "VipsForeignLoadHeifBuffer": "heif",
}
_LOADER_ROOT = "VipsForeignLoad"
_FAIL_ON = "error"  # corrupt or truncated data fails the job instead of yielding grey blocks
_MEDIA = {
    "jpeg": ("image/jpeg", "jpg"),
    "png": ("image/png", "png"),
    "webp": ("image/webp", "webp"),
    "avif": ("image/avif", "avif"),
}


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    """An encoded output image; `extension` has no dot (`jpg`, `png`, `webp`, `avif`)."""

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class _Source:
    data: bytes
    format: str
    width: int
    height: int
    orientation: int
    has_icc: bool


def block_other_loaders() -> None:
    """Block libvips' untrusted loaders (SVG, CSV, raw, vips; magick, PDF and the rest where
    the build has them) and every other loader outside `_LOADERS` (matrix, UltraHDR...), in
    file, buffer and source form. Process-wide and idempotent; runs at import, before any bytes."""
    if not pyvips.at_least_libvips(8, 13):
        raise RuntimeError("libvips 8.13 or later is needed to block untrusted loaders")
    pyvips.operation_block_set(_LOADER_ROOT, True)
    for name in {loader.removesuffix("Buffer") for loader in _LOADERS}:
        if pyvips.type_from_name(name) != 0:  # libvips has either the nsgif or the giflib one
            pyvips.operation_block_set(name, False)
    pyvips.block_untrusted_set(True)  # last, so an untrusted allowed-family loader stays blocked


block_other_loaders()


def disable_operation_cache() -> None:
    """Turn libvips' operation cache off, process-wide, as imgproxy does. It keeps the last
    100 operations (their source buffers and pixels) for a repeat call with the same
    arguments; every job here brings new bytes, so it only holds memory. Runs at import."""
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)


disable_operation_cache()


def process(
    data: bytes, ops: Sequence[Operation] | None, *, jpeg_quality: int, max_pixels: int
) -> ProcessedImage:
    """Apply `ops` in order, or the default pipeline when `ops` is None or empty.

    Raises NotAnImage, TooManyPixels (before decoding) or ImageDecodeError.
    """
    source = _inspect(data, max_pixels)
    try:
        if not ops:
            return _default_pipeline(source, jpeg_quality)
        return _explicit_pipeline(source, ops, jpeg_quality, max_pixels)
    except pyvips.Error as exc:
        raise ImageDecodeError(_first_line(exc)) from exc


def _inspect(data: bytes, max_pixels: int) -> _Source:
    pointer = pyvips.vips_lib.vips_foreign_find_load_buffer(data, len(data))
    loader = None if pointer == pyvips.ffi.NULL else pyvips.ffi.string(pointer).decode()
    if loader not in _LOADERS:
        raise NotAnImage("The file is not a JPEG, PNG, WebP, AVIF/HEIF, GIF or TIFF image")
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on=_FAIL_ON)
    except pyvips.Error as exc:
        raise ImageDecodeError(_first_line(exc)) from exc
    if header.width * header.height > max_pixels:
        raise TooManyPixels(f"{header.width}x{header.height} is more than {max_pixels:,} pixels")
    fields = header.get_fields()
    orientation = header.get("orientation") if "orientation" in fields else 1
    return _Source(
        data, _LOADERS[loader], header.width, header.height, orientation,
        "icc-profile-data" in fields,
    )  # fmt: skip


def _default_pipeline(source: _Source, quality: int) -> ProcessedImage:
    """Orient, strip, fit in 2048x2048, JPEG (PNG/WebP if transparent), never larger.

    When the encoding is larger than the source and the source is already a JPEG, PNG or
    WebP that fits the box and needs no rotation, the source is returned with its metadata
    removed losslessly. Otherwise lower qualities are tried; only a source in a format we do
    not serve (GIF, TIFF, HEIF) whose lossless re-encoding stays larger can break the rule.
    """
    options: dict[str, object] = {"output_profile": "srgb"} if source.has_icc else {}
    image = _to_srgb(_thumbnail(source, DEFAULT_BOX, DEFAULT_BOX, size="down", **options))
    if image.hasalpha():
        image = image.copy_memory()  # the alpha check below must not decode the source twice
    fmt: ImageFormat = "jpeg"
    if _has_visible_alpha(image):
        fmt = "webp" if source.format in ("webp", "heif") else "png"
    elif image.hasalpha():
        image = image.extract_band(0, n=image.bands - 1)
    out = _encode(image, fmt, quality)
    if len(out.data) <= len(source.data):
        return out
    original = _source_as_output(source)
    if original is not None:
        return original
    for lower in (quality * 2 // 3, quality // 3, 5):
        if fmt == "png" or lower >= quality:
            break
        out = _encode(image, fmt, max(lower, 1))
        if len(out.data) <= len(source.data):
            break
    return out


def _source_as_output(source: _Source) -> ProcessedImage | None:
    fits = source.width <= DEFAULT_BOX and source.height <= DEFAULT_BOX
    if source.format not in ("jpeg", "png", "webp") or not fits or source.orientation != 1:
        return None
    stripped = strip_metadata(source.data, source.format)
    if stripped is None or len(stripped) > len(source.data):
        return None
    content_type, extension = _MEDIA[source.format]
    return ProcessedImage(stripped, content_type, extension, source.width, source.height)


def _explicit_pipeline(
    source: _Source, ops: Sequence[Operation], quality: int, max_pixels: int
) -> ProcessedImage:
    """Apply `ops` in order to the EXIF-oriented image; the output keeps the source's format
    when we serve it (else JPEG, or PNG when transparent) unless a `convert` says otherwise."""
    placement: Placement | None = None
    if has_free_angle(ops):
        placement = place(*_oriented_size(source), ops)
        _check_size(placement.width, placement.height, max_pixels)
        image, placement = _load_for_placement(source, placement)
        rest: list[Operation] = [op for op in ops if isinstance(op, Convert | Compress)]
    else:
        image, rest = _load_for_turns(source, ops)
    _check_size(image.width, image.height, max_pixels)
    if source.has_icc:
        image = image.icc_transform("srgb")
    image = _to_srgb(image)
    fmt: ImageFormat = "jpeg"
    if source.format in _MEDIA:
        fmt = cast(ImageFormat, source.format)
    elif image.hasalpha():
        fmt = "png"
    if placement is not None:
        image = _place(image, placement)
    for op in rest:
        if isinstance(op, Rotate):
            image = _turn(image, op.degrees)
        elif isinstance(op, Resize):
            image = image.thumbnail_image(op.width, height=op.height, size="down")
        elif isinstance(op, ForceResize):
            image = image.thumbnail_image(op.width, height=op.height, size="force")
        elif isinstance(op, Convert):
            fmt = op.format
        elif isinstance(op, Compress):
            quality = op.quality
        # Here each canvas is computed (resized from the one before), so each is guarded.
        _check_size(image.width, image.height, max_pixels)
    return _encode(image, fmt, quality)


def _load_for_turns(
    source: _Source, ops: Sequence[Operation]
) -> tuple[pyvips.Image, list[Operation]]:
    """The source for a chain of exact turns and resizes, shrunk on load when the chain
    starts with a resize; and the operations still to apply."""
    first = ops[0]
    # A turn reads its input out of order, which a sequential (streamed) image cannot serve
    # past libvips' small line cache: "out of order read" on any real-size photo.
    rotates = any(isinstance(op, Rotate) for op in ops)
    if isinstance(first, Resize | ForceResize):
        size = "down" if isinstance(first, Resize) else "force"
        image = _thumbnail(source, first.width, first.height, size=size)
        if rotates:
            image = image.copy_memory()  # the resized image, not the source
        return image, list(ops[1:])
    random = rotates or source.orientation != 1
    image = pyvips.Image.new_from_buffer(
        source.data, "", access="random" if random else "sequential", fail_on=_FAIL_ON
    ).autorot()
    return image, list(ops)


def _load_for_placement(source: _Source, placement: Placement) -> tuple[pyvips.Image, Placement]:
    """The source for one affine map, shrunk on load (uniformly, as far as the most
    preserved direction allows) when the whole chain shrinks; the map from what was loaded.

    The map reads out of order, so the loaded image is held in memory: the shrunk one, not
    the full decode, when the chain allows it."""
    scale = placement.largest_scale()
    if scale >= 1:
        image = pyvips.Image.new_from_buffer(
            source.data, "", access="random", fail_on=_FAIL_ON
        ).autorot()
        return image, placement
    width, height = _oriented_size(source)
    image = _thumbnail(
        source, max(1, round(width * scale)), max(1, round(height * scale)), size="force"
    ).copy_memory()
    shrunk = (width / image.width, 0.0, 0.0, height / image.height, 0.0, 0.0)
    return image, Placement(compose(placement.matrix, shrunk), placement.width, placement.height)


def _place(image: pyvips.Image, placement: Placement) -> pyvips.Image:
    """Resample `image` onto the placement's canvas; the corners it leaves are transparent.

    Bilinear sampling is right while no output direction skips input pixels; an output
    axis that shrinks further (a force_resize squashing a turned photo) is sampled at twice
    its size or less, then reduced with libvips' resize kernel."""
    if not image.hasalpha():
        image = image.bandjoin(255).copy(interpretation=image.interpretation)
    a, b, c, d = placement.matrix[:4]
    sizes = []
    for size, step in ((placement.width, math.hypot(a, b)), (placement.height, math.hypot(c, d))):
        sizes.append(size if step >= 0.5 else max(size, round(size / (2 * step))))
    inner_w, inner_h = sizes
    kx, ky = placement.width / inner_w, placement.height / inner_h
    a, b, c, d, tx, ty = compose((1 / kx, 0.0, 0.0, 1 / ky, 0.0, 0.0), placement.matrix)
    # libvips maps pixel indexes (corners); the placement maps centres (index + 0.5).
    image = image.affine(
        [a, b, c, d], oarea=[0, 0, inner_w, inner_h],
        odx=(a + b) / 2 + tx - 0.5, ody=(c + d) / 2 + ty - 0.5,
        extend="background", background=[0] * image.bands,
    )  # fmt: skip
    if (inner_w, inner_h) != (placement.width, placement.height):
        image = image.resize(kx, vscale=ky)
    return image


def _thumbnail(
    source: _Source, width: int, height: int, *, size: str, **options: object
) -> pyvips.Image:
    """`thumbnail_buffer` (oriented, fit in `width` x `height` or forced to it), except that
    a JPEG is decoded at 1/2, 1/4 or 1/8 scale whenever that still leaves at least the
    result's pixels, as imgproxy does. libvips' own thumbnail keeps a factor of two for its
    final reduce, so it decodes up to four times the pixels for an output that, once encoded,
    differs by a fraction of a dB (docs/performance.md, "The resize recipe")."""
    oriented_width, oriented_height = _oriented_size(source)
    x_shrink, y_shrink = oriented_width / width, oriented_height / height
    if size == "force":
        shrink, target = min(x_shrink, y_shrink), (width, height)
    else:  # "down": fit in the box, never enlarged
        shrink = max(x_shrink, y_shrink, 1.0)
        target = (max(1, round(oriented_width / shrink)), max(1, round(oriented_height / shrink)))
    factor = next((f for f in (8, 4, 2) if shrink >= f), 1)
    if source.format != "jpeg" or factor == 1:
        return pyvips.Image.thumbnail_buffer(
            source.data, width, height=height, size=size,
            option_string=f"fail_on={_FAIL_ON}", **options,
        )  # fmt: skip
    image = pyvips.Image.new_from_buffer(
        source.data, "", shrink=factor, access="sequential", fail_on=_FAIL_ON
    )
    return image.thumbnail_image(target[0], height=target[1], size="force", **options)


def _oriented_size(source: _Source) -> tuple[int, int]:
    """The source's size once turned upright by its EXIF orientation."""
    if source.orientation in (5, 6, 7, 8):
        return source.height, source.width
    return source.width, source.height


def _check_size(width: int, height: int, max_pixels: int) -> None:
    """Operations are lazy, so an enlarging one is refused before any pixel is computed."""
    if width * height > max_pixels:
        raise TooManyPixels(f"the result would be {width}x{height} pixels")


def _turn(image: pyvips.Image, degrees: float) -> pyvips.Image:
    """An exact clockwise turn by a multiple of 90 degrees (other angles are placed)."""
    turn = int(degrees % 360)
    return image if turn == 0 else image.rot(f"d{turn}")


def _to_srgb(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB (or 8-bit grey): what browsers expect, and what every saver accepts."""
    if image.interpretation in ("b-w", "grey16"):
        return image.colourspace("b-w") if image.format != "uchar" else image
    if image.interpretation != "srgb" or image.format != "uchar":
        return image.colourspace("srgb")
    return image


def _has_visible_alpha(image: pyvips.Image) -> bool:
    """True when some pixel is not fully opaque; an all-opaque alpha band is dropped."""
    return bool(image.hasalpha() and image.extract_band(image.bands - 1).min() < 255)


def _encode(image: pyvips.Image, fmt: ImageFormat, quality: int) -> ProcessedImage:
    if fmt == "jpeg":
        if image.hasalpha():
            image = image.flatten(background=[255] * (image.bands - 1))
        data = image.jpegsave_buffer(Q=quality, optimize_coding=True, keep="none")
    elif fmt == "png":
        data = image.pngsave_buffer(compression=6, keep="none")
    elif fmt == "webp":
        data = image.webpsave_buffer(Q=quality, keep="none")
    else:
        options = {"Q": quality, "compression": "av1", "effort": 2, "keep": "none"}
        tile_size = grid_tile_size(image.width, image.height, alpha=image.hasalpha())
        if tile_size is None:
            data = image.heifsave_buffer(**options)
        else:
            data = encode_grid(image, tile_size, **options)
    content_type, extension = _MEDIA[fmt]
    return ProcessedImage(bytes(data), content_type, extension, image.width, image.height)


def _first_line(exc: pyvips.Error) -> str:
    """libvips' message without the call trace: `VipsJpeg: premature end of JPEG image`."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else "The image data is corrupt"

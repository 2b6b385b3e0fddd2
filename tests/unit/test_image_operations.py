"""libvips execution: the default pipeline, explicit operations, sniffing and refusals."""

from __future__ import annotations

import pytest
import pyvips

from stockroom.domain.errors import ImageDecodeError, NotAnImage, TooManyPixels
from stockroom.domain.operations import (
    Compress,
    Convert,
    ForceResize,
    Operation,
    Resize,
    Rotate,
    parse_operations_text,
)
from stockroom.pipeline.operations import ProcessedImage, process
from tests.support.images import huge_header_png, photo_bytes, photo_like, truncated

MAX_PIXELS = 50_000_000


def run(data: bytes, ops: list[Operation] | None = None, **kwargs: int) -> ProcessedImage:
    options = {"jpeg_quality": 50, "max_pixels": MAX_PIXELS, **kwargs}
    return process(data, ops, **options)


def decoded(result: ProcessedImage) -> pyvips.Image:
    image = pyvips.Image.new_from_buffer(result.data, "")
    assert (image.width, image.height) == (result.width, result.height)
    return image


def test_default_pipeline_turns_by_exif_orientation_and_strips_it() -> None:
    source = photo_bytes(600, 400, orientation=6)
    result = run(source)
    image = decoded(result)
    assert (result.width, result.height) == (400, 600)
    assert result.content_type == "image/jpeg"
    assert result.extension == "jpg"
    assert "exif-data" not in image.get_fields()
    assert "orientation" not in image.get_fields() or image.get("orientation") == 1


def test_default_pipeline_fits_large_photos_in_2048_as_jpeg() -> None:
    source = photo_bytes(3000, 2000, quality=92)
    result = run(source)
    assert (result.width, result.height) == (2048, 1365)
    assert result.content_type == "image/jpeg"
    assert decoded(result).get("vips-loader") == "jpegload_buffer"
    assert len(result.data) < len(source)


def test_default_pipeline_never_enlarges() -> None:
    result = run(photo_bytes(320, 200, "png"))
    assert (result.width, result.height) == (320, 200)


def test_transparent_png_stays_png_with_its_alpha() -> None:
    result = run(photo_bytes(500, 300, "png", alpha=True))
    image = decoded(result)
    assert result.content_type == "image/png"
    assert image.hasalpha()
    assert image[3].min() == 0


def test_transparent_webp_stays_webp() -> None:
    result = run(photo_bytes(500, 300, "webp", alpha=True))
    assert result.content_type == "image/webp"
    assert decoded(result).hasalpha()


def test_fully_opaque_alpha_is_dropped_and_becomes_jpeg() -> None:
    opaque = photo_like(400, 300).bandjoin(255).copy(interpretation="srgb")
    result = run(bytes(opaque.pngsave_buffer()))
    assert result.content_type == "image/jpeg"


def test_output_is_never_larger_than_a_small_well_compressed_jpeg() -> None:
    source = photo_bytes(300, 200, quality=15)
    result = run(source, jpeg_quality=90)
    assert len(result.data) <= len(source)
    assert (result.width, result.height) == (300, 200)
    assert result.content_type == "image/jpeg"


def test_returned_source_loses_its_metadata_but_not_its_pixels() -> None:
    image = photo_like(300, 200).copy()
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "Jane Secret")
    source = bytes(image.jpegsave_buffer(Q=15, keep="all"))
    assert b"Jane Secret" in source
    result = run(source, jpeg_quality=95)
    assert b"Jane Secret" not in result.data
    assert len(result.data) <= len(source)
    assert decoded(result).avg() == pytest.approx(pyvips.Image.new_from_buffer(source, "").avg())


def test_never_larger_holds_for_an_oriented_jpeg_by_lowering_quality() -> None:
    source = photo_bytes(300, 200, quality=15, orientation=6)
    result = run(source, jpeg_quality=95)
    assert len(result.data) <= len(source)
    assert (result.width, result.height) == (200, 300)


def test_explicit_operations_apply_in_order() -> None:
    source = photo_bytes(800, 400)
    ops: list[Operation] = [Resize(400, 400), Rotate(90), Convert("webp"), Compress(30)]
    result = run(source, ops)
    assert (result.width, result.height) == (200, 400)
    assert result.content_type == "image/webp"
    assert decoded(result).get("vips-loader") == "webpload_buffer"


def test_resize_never_enlarges_and_force_resize_is_exact() -> None:
    source = photo_bytes(300, 200)
    assert (run(source, [Resize(900, 900)]).width, run(source, [Resize(900, 900)]).height) == (
        300,
        200,
    )
    forced = run(source, [ForceResize(123, 321)])
    assert (forced.width, forced.height) == (123, 321)


def test_right_angle_rotation_is_clockwise() -> None:
    marked = pyvips.Image.black(100, 50, bands=3).draw_rect(
        [255, 255, 255], 0, 0, 20, 20, fill=True
    )
    source = bytes(marked.copy(interpretation="srgb").pngsave_buffer())
    image = decoded(run(source, [Rotate(90)]))
    assert (image.width, image.height) == (50, 100)
    assert image.getpoint(image.width - 5, 5)[0] == 255  # top-left went to top-right
    assert image.getpoint(5, 5)[0] == 0


def test_any_angle_rotation_grows_the_canvas_with_transparent_corners() -> None:
    image = decoded(run(photo_bytes(200, 200, "png"), [Rotate(45)]))
    assert image.width == image.height > 270
    assert image.hasalpha()
    assert image.getpoint(0, 0)[3] == 0


def test_any_angle_rotation_to_jpeg_fills_corners_white() -> None:
    result = run(photo_bytes(200, 200), [Rotate(30)])
    image = decoded(result)
    assert result.content_type == "image/jpeg"
    assert min(image.getpoint(0, 0)) > 240


@pytest.mark.parametrize(("fmt", "loader"), [("png", "pngload"), ("avif", "heifload")])
def test_convert_changes_the_format(fmt: str, loader: str) -> None:
    result = run(photo_bytes(120, 80), [Convert(fmt)])  # type: ignore[arg-type]
    assert result.extension == fmt
    assert decoded(result).get("vips-loader").startswith(loader)


def test_explicit_operations_start_from_the_oriented_image() -> None:
    result = run(photo_bytes(600, 400, orientation=6), [Compress(40)])
    assert (result.width, result.height) == (400, 600)


def test_content_is_sniffed_not_named() -> None:
    png = photo_bytes(64, 64, "png")
    assert run(png, [Compress(50)]).content_type == "image/png"


@pytest.mark.parametrize(
    "data",
    [
        b"just some text, certainly not a picture\n",
        b"",
        b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
    ],
    ids=["text", "empty", "svg", "pdf"],
)
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(NotAnImage):
        run(data)


def test_truncated_jpeg_is_a_decode_error() -> None:
    with pytest.raises(ImageDecodeError):
        run(truncated(photo_bytes(600, 400)))


def test_truncated_jpeg_is_a_decode_error_for_explicit_operations_too() -> None:
    with pytest.raises(ImageDecodeError):
        run(truncated(photo_bytes(600, 400)), [Rotate(90)])


def test_huge_pixel_count_is_refused_from_the_header() -> None:
    bomb = huge_header_png(60_000, 60_000)
    assert len(bomb) < 200
    with pytest.raises(TooManyPixels):
        run(bomb)


def test_pixel_limit_is_configurable() -> None:
    with pytest.raises(TooManyPixels):
        run(photo_bytes(300, 300), max_pixels=300 * 300 - 1)
    assert run(photo_bytes(300, 300), max_pixels=300 * 300).width == 300


def test_operations_may_not_grow_the_image_past_the_pixel_limit() -> None:
    with pytest.raises(TooManyPixels):
        run(photo_bytes(100, 100), [ForceResize(2000, 2000)], max_pixels=1_000_000)


@pytest.mark.parametrize("fmt", ["webp", "avif", "gif", "tiff"])
def test_other_source_formats_become_8_bit_srgb_jpeg(fmt: str) -> None:
    result = run(photo_bytes(300, 200, fmt))  # type: ignore[arg-type]
    image = decoded(result)
    assert result.content_type == "image/jpeg"
    assert (image.bands, image.format, image.interpretation) == (3, "uchar", "srgb")


def test_16_bit_png_is_served_as_8_bit() -> None:
    deep = (photo_like(300, 200, alpha=True).cast("ushort") * 257).copy(interpretation="rgb16")
    image = decoded(run(bytes(deep.pngsave_buffer())))
    assert (image.bands, image.format) == (4, "uchar")


@pytest.mark.parametrize(
    "text",
    ["rotate,90", "rotate,33;force_resize,400x300", "resize,800x800;rotate,33", "convert,webp"],
)
@pytest.mark.parametrize("orientation", [None, 6])
def test_turns_of_real_size_photos_read_the_source_as_they_need(
    text: str, orientation: int | None
) -> None:
    """A turn reads out of order, past what a streamed JPEG decode keeps: these chains once
    failed with "out of order read" on any photo of a real size."""
    source = photo_bytes(1600, 1200, "jpeg", orientation=orientation)

    out = process(source, parse_operations_text(text), jpeg_quality=50, max_pixels=50_000_000)

    assert out.width > 0
    assert decoded(out).avg() > 0  # every pixel decoded


def test_a_turned_canvas_over_the_limit_passes_when_source_and_output_fit() -> None:
    """The 45-degree canvas of a 1000x800 photo is 1.62 MP, but it is never made: only the
    0.8 MP source is decoded and the 0.81 MP output produced."""
    ops: list[Operation] = [Rotate(45), ForceResize(900, 900)]

    image = decoded(run(photo_bytes(1000, 800, "png"), ops, max_pixels=1_000_000))

    assert (image.width, image.height) == (900, 900)
    assert image.getpoint(0, 0)[3] == 0  # transparent corners, as from the turned canvas


def test_the_output_of_a_free_turn_is_still_held_to_the_limit() -> None:
    with pytest.raises(TooManyPixels):
        run(photo_bytes(1000, 800, "png"), [Rotate(45)], max_pixels=1_000_000)


def test_turns_that_cancel_out_give_back_the_source_pixels() -> None:
    """One map from source to output: no resampling twice, no half-pixel drift (at this size
    the source lands on whole pixels of the canvas)."""
    source = photo_like(1600, 1200).copy_memory()
    ops: list[Operation] = [Rotate(10), Rotate(-10), Convert("png")]

    image = decoded(run(bytes(source.pngsave_buffer()), ops))

    left, top = (image.width - 1600) // 2, (image.height - 1200) // 2
    middle = image.crop(left + 50, top + 50, 1500, 1100)[0:3].cast("int")
    assert (middle - source.crop(50, 50, 1500, 1100).cast("int")).abs().max() <= 1


@pytest.mark.parametrize(("width", "height"), [(600, 40), (40, 600), (300, 300), (700, 500)])
def test_a_force_resize_after_a_turn_is_the_turned_photo_resized(width: int, height: int) -> None:
    """Same size and, up to interpolation, the same pixels as libvips turning the whole
    canvas and then resizing it (squashed axes are reduced, not point-sampled)."""
    source = photo_like(800, 600).copy_memory()
    ops: list[Operation] = [Rotate(33), ForceResize(width, height), Convert("png")]

    image = decoded(run(bytes(source.pngsave_buffer()), ops))

    turned = source.bandjoin(255).copy(interpretation="srgb").rotate(33, background=[0] * 4)
    expected = turned.thumbnail_image(width, height=height, size="force")
    assert (image.width, image.height) == (width, height)
    opaque = (image[3] == 255) & (expected[3] == 255)
    difference = (image[0:3].cast("int") - expected[0:3].cast("int")).abs().bandmean()
    assert (difference * (opaque / 255)).avg() / (opaque / 255).avg() < 3


def test_a_free_turn_to_avif_keeps_transparent_corners() -> None:
    ops: list[Operation] = [Rotate(33), ForceResize(300, 300), Convert("avif")]

    result = run(photo_bytes(800, 600), ops)

    image = decoded(result)
    assert result.content_type == "image/avif"
    assert image.hasalpha()
    assert image.getpoint(0, 0)[3] < 8
    assert image.getpoint(150, 150)[3] > 247


def test_libvips_keeps_no_operation_of_a_finished_job() -> None:
    """Every job brings new bytes: a cached operation would only pin its buffers."""
    source = photo_bytes(800, 600)
    run(source)
    run(source, [Resize(100, 100), Convert("webp")])

    assert pyvips.cache_get_max() == 0
    assert pyvips.cache_get_size() == 0

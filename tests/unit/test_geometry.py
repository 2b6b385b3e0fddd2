"""The chain's canvases as numbers: sizes as libvips would make them, one map for the pixels."""

from __future__ import annotations

import pytest
import pyvips

from stockroom.domain.operations import Compress, ForceResize, Operation, Resize, Rotate
from stockroom.pipeline.geometry import has_free_angle, place


@pytest.mark.parametrize("degrees", [33, -20, 45, 100, 359.5])
def test_a_turn_makes_the_canvas_libvips_rotate_makes(degrees: float) -> None:
    source = pyvips.Image.black(8660, 5773)

    placed = place(8660, 5773, [Rotate(degrees)])

    turned = source.rotate(degrees % 360)
    assert (placed.width, placed.height) == (turned.width, turned.height)


def test_right_angle_turns_swap_the_sides_exactly() -> None:
    placed = place(300, 200, [Rotate(90)])

    assert (placed.width, placed.height) == (200, 300)
    assert placed.matrix == (0.0, -1.0, 1.0, 0.0, 200.0, 0.0)  # top-left goes to top-right


def test_turns_that_cancel_out_place_the_source_in_the_middle_unscaled() -> None:
    placed = place(400, 300, [Rotate(10), Rotate(-10)])

    a, b, c, d, tx, ty = placed.matrix
    assert (a, b, c, d) == pytest.approx((1, 0, 0, 1), abs=1e-12)
    assert (tx, ty) == pytest.approx(((placed.width - 400) / 2, (placed.height - 300) / 2))


def test_resize_fits_and_never_enlarges_and_force_resize_is_exact() -> None:
    fitted = place(800, 400, [Resize(400, 400)])
    assert (fitted.width, fitted.height) == (400, 200)
    assert place(300, 200, [Resize(900, 900)]).matrix[:4] == (1.0, 0.0, 0.0, 1.0)
    forced = place(300, 200, [Rotate(33), ForceResize(123, 321)])
    assert (forced.width, forced.height) == (123, 321)


def test_the_turned_canvas_only_sets_the_scale_of_what_follows() -> None:
    """rotate 33 then force_resize 6000x6000 on a 50 MP photo: the 99.5 MP canvas between
    them is never made; the map shrinks the source by at most 0.63 in any direction."""
    placed = place(8660, 5773, [Rotate(33), ForceResize(6000, 6000)])

    assert (placed.width, placed.height) == (6000, 6000)
    assert placed.largest_scale() == pytest.approx(6000 / 9558, rel=1e-6)


def test_only_angles_off_the_right_angles_are_free() -> None:
    exact: list[Operation] = [Rotate(90), Rotate(-180), Rotate(720), Compress(40)]
    assert not has_free_angle(exact)
    assert has_free_angle([*exact, Rotate(90.5)])

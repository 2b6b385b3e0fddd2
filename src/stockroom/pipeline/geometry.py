"""Where a chain of rotations and resizes takes an image, as one affine map.

The canvases between the operations (a 50 MP photo turned by 33 degrees is a 99.5 MP
canvas) exist only here, as numbers: libvips then computes the output pixels straight from
the decoded source. Coordinates are continuous, with the pixel centres at +0.5, so an exact
turn and a centred resize compose without half-pixel drift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from stockroom.domain.operations import ForceResize, Operation, Resize, Rotate

# x' = a x + b y + tx, y' = c x + d y + ty
Affine = tuple[float, float, float, float, float, float]
IDENTITY: Affine = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Placement:
    """The output canvas of a chain and the map from the oriented source onto it."""

    matrix: Affine
    width: int
    height: int

    def largest_scale(self) -> float:
        """The largest factor by which any direction of the source is scaled (the largest
        singular value of the linear part): below 1, the source can be shrunk on load."""
        a, b, c, d = self.matrix[:4]
        trace = a * a + b * b + c * c + d * d
        det = a * d - b * c
        return math.sqrt((trace + math.sqrt(max(trace * trace - 4 * det * det, 0.0))) / 2)


def has_free_angle(ops: Iterable[Operation]) -> bool:
    """True when some rotation is not a multiple of 90 degrees (one that resamples)."""
    return any(isinstance(op, Rotate) and op.degrees % 90 != 0 for op in ops)


def place(width: int, height: int, ops: Iterable[Operation]) -> Placement:
    """Follow the geometric operations (others are ignored) from a `width` x `height` source:
    the canvas sizes are those of libvips' `rotate` (rounded bounding box) and `thumbnail`
    (`resize` fits and never enlarges, `force_resize` is exact)."""
    matrix, w, h = IDENTITY, width, height
    for op in ops:
        if isinstance(op, Rotate):
            matrix, w, h = _rotated(matrix, w, h, op.degrees)
        elif isinstance(op, Resize):
            factor = min(op.width / w, op.height / h)
            if factor < 1:
                new_w, new_h = max(1, _round(w * factor)), max(1, _round(h * factor))
                matrix, w, h = compose((new_w / w, 0, 0, new_h / h, 0, 0), matrix), new_w, new_h
        elif isinstance(op, ForceResize):
            matrix = compose((op.width / w, 0, 0, op.height / h, 0, 0), matrix)
            w, h = op.width, op.height
    return Placement(matrix, w, h)


def compose(outer: Affine, inner: Affine) -> Affine:
    """`outer` after `inner`."""
    a, b, c, d, tx, ty = outer
    a2, b2, c2, d2, tx2, ty2 = inner
    return (
        a * a2 + b * c2, a * b2 + b * d2, c * a2 + d * c2, c * b2 + d * d2,
        a * tx2 + b * ty2 + tx, c * tx2 + d * ty2 + ty,
    )  # fmt: skip


def _rotated(matrix: Affine, w: int, h: int, degrees: float) -> tuple[Affine, int, int]:
    turn = degrees % 360
    if turn == 0:
        return matrix, w, h
    if turn % 90 == 0:  # exact, so a right-angle turn inside a chain stays exact
        cos, sin = {90: (0.0, 1.0), 180: (-1.0, 0.0), 270: (0.0, -1.0)}[int(turn)]
    else:
        cos, sin = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    # Clockwise on screen (y points down), as libvips' `rotate` and `rot`.
    xs = (0.0, cos * w, -sin * h, cos * w - sin * h)
    ys = (0.0, sin * w, cos * h, sin * w + cos * h)
    extent_w, extent_h = max(xs) - min(xs), max(ys) - min(ys)
    new_w, new_h = max(1, _round(extent_w)), max(1, _round(extent_h))
    # The rounded canvas is centred on the turned source.
    tx = -min(xs) + (new_w - extent_w) / 2
    ty = -min(ys) + (new_h - extent_h) / 2
    return compose((cos, -sin, sin, cos, tx, ty), matrix), new_w, new_h


def _round(value: float) -> int:
    """Half away from zero, as libvips' VIPS_ROUND_INT (Python's round() is half-even)."""
    return math.floor(value + 0.5)

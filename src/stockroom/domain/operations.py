"""The image operations a job may ask for, their two input forms, and their stored form.

Plain data only: `pipeline/operations.py` turns these into libvips calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, TypeVar, get_args

from stockroom.domain.errors import FieldError, InvalidInput

ImageFormat: TypeAlias = Literal["jpeg", "png", "webp", "avif"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = get_args(ImageFormat)
_FORMAT_ALIASES = {"jpg": "jpeg"}
MIN_SIZE, MAX_SIZE = 1, 10_000
MIN_QUALITY, MAX_QUALITY = 1, 100
MAX_OPERATIONS = 20
MAX_DEGREES = 36_000  # a hundred turns: any angle, as a number every store can hold
_Item = TypeVar("_Item")


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise ValueError(f"{name} must be between {MIN_SIZE} and {MAX_SIZE}")


@dataclass(frozen=True, slots=True)
class Rotate:
    """Rotate clockwise by any finite angle; multiples of 90 are lossless turns."""

    degrees: float

    def __post_init__(self) -> None:
        if isinstance(self.degrees, bool) or not isinstance(self.degrees, int | float):
            raise ValueError("degrees must be a number")
        if isinstance(self.degrees, float) and not math.isfinite(self.degrees):
            raise ValueError("degrees must be a finite number")
        if not -MAX_DEGREES <= self.degrees <= MAX_DEGREES:
            raise ValueError(f"degrees must be between {-MAX_DEGREES} and {MAX_DEGREES}")


@dataclass(frozen=True, slots=True)
class Resize:
    """Fit inside width x height, keeping the aspect ratio, never enlarging."""

    width: int
    height: int

    def __post_init__(self) -> None:
        _check_size(self.width, self.height)


@dataclass(frozen=True, slots=True)
class ForceResize:
    """Scale to exactly width x height, whatever the aspect ratio."""

    width: int
    height: int

    def __post_init__(self) -> None:
        _check_size(self.width, self.height)


@dataclass(frozen=True, slots=True)
class Convert:
    """Choose the output format."""

    format: ImageFormat

    def __post_init__(self) -> None:
        if self.format not in IMAGE_FORMATS:
            raise ValueError(f"format must be one of {', '.join(IMAGE_FORMATS)}")


@dataclass(frozen=True, slots=True)
class Compress:
    """Choose the encoder quality of lossy formats (1 smallest .. 100 best)."""

    quality: int

    def __post_init__(self) -> None:
        if isinstance(self.quality, bool) or not isinstance(self.quality, int):
            raise ValueError("quality must be an integer")
        if not MIN_QUALITY <= self.quality <= MAX_QUALITY:
            raise ValueError(f"quality must be between {MIN_QUALITY} and {MAX_QUALITY}")


Operation: TypeAlias = Rotate | Resize | ForceResize | Convert | Compress

# No operations means "the default pipeline" (orient, strip, fit 2048, JPEG, never larger).
DEFAULT_PIPELINE: tuple[Operation, ...] = ()

OP_NAMES: dict[type[Operation], str] = {
    Rotate: "rotate",
    Resize: "resize",
    ForceResize: "force_resize",
    Convert: "convert",
    Compress: "compress",
}


def is_default_pipeline(ops: Sequence[Operation] | None) -> bool:
    return not ops


# -- text form: "rotate,90;resize,800x600;convert,webp" ----------------------------------
def _size_from_text(arg: str) -> tuple[int, int]:
    width, sep, height = arg.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ValueError("size must look like 800x600")
    return int(width), int(height)


def _number_from_text(arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise ValueError("degrees must be a number") from None
    return int(value) if value.is_integer() else value


def _int_from_text(arg: str, name: str) -> int:
    if not arg.strip().lstrip("-").isdigit():
        raise ValueError(f"{name} must be an integer")
    return int(arg)


_TEXT_PARSERS: dict[str, Callable[[str], Operation]] = {
    "rotate": lambda arg: Rotate(_number_from_text(arg)),
    "resize": lambda arg: Resize(*_size_from_text(arg)),
    "force_resize": lambda arg: ForceResize(*_size_from_text(arg)),
    "convert": lambda arg: Convert(_format(arg)),
    "compress": lambda arg: Compress(_int_from_text(arg, "quality")),
}


def _format(raw: object) -> ImageFormat:
    if not isinstance(raw, str):
        raise ValueError("format must be a string")
    name = raw.strip().lower()
    name = _FORMAT_ALIASES.get(name, name)
    if name not in IMAGE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(IMAGE_FORMATS)}")
    return name


def _parse_text_op(item: str) -> Operation:
    raw_name, sep, arg = item.partition(",")
    name = raw_name.strip().lower()
    parser = _TEXT_PARSERS.get(name)
    if parser is None:
        raise ValueError(f"unknown operation {raw_name.strip()!r}; expected one of {_names()}")
    if not sep or not arg.strip():
        raise ValueError(f"{name} needs an argument, e.g. {_TEXT_EXAMPLES[name]}")
    return parser(arg.strip())


_TEXT_EXAMPLES = {
    "rotate": "rotate,90",
    "resize": "resize,800x600",
    "force_resize": "force_resize,300x300",
    "convert": "convert,webp",
    "compress": "compress,60",
}


def parse_operations_text(text: str) -> tuple[Operation, ...]:
    """Parse the upload form; every bad item is reported as `operations[i]` (0-based)."""
    items = [item for item in text.split(";") if item.strip()]
    return _collect(items, _parse_text_op)


# -- JSON form: [{"op": "rotate", "degrees": 90}, ...] ----------------------------------
_JSON_FIELDS: dict[str, tuple[str, ...]] = {
    "rotate": ("degrees",),
    "resize": ("width", "height"),
    "force_resize": ("width", "height"),
    "convert": ("format",),
    "compress": ("quality",),
}


def _parse_json_op(item: object) -> Operation:
    if not isinstance(item, Mapping):
        raise ValueError('must be an object like {"op": "rotate", "degrees": 90}')
    name = item.get("op")
    if not isinstance(name, str) or name not in _JSON_FIELDS:
        raise ValueError(f"op must be one of {_names()}")
    expected = _JSON_FIELDS[name]
    missing = [key for key in expected if key not in item]
    unknown = sorted(str(key) for key in item if key != "op" and key not in expected)
    if missing:
        raise ValueError(f"{name} needs {', '.join(expected)}; missing {', '.join(missing)}")
    if unknown:
        raise ValueError(f"{name} does not take {', '.join(unknown)}")
    args = [item[key] for key in expected]
    if name == "rotate":
        return Rotate(args[0])
    if name == "resize":
        return Resize(args[0], args[1])
    if name == "force_resize":
        return ForceResize(args[0], args[1])
    if name == "convert":
        return Convert(_format(args[0]))
    return Compress(args[0])


def parse_operations_json(value: object) -> tuple[Operation, ...]:
    """Parse the JSON form (a list of objects); `None` or `[]` means the default pipeline."""
    if value is None:
        return DEFAULT_PIPELINE
    if not isinstance(value, list | tuple):
        raise InvalidInput(
            "operations must be a list", [FieldError("operations", "must be a list")]
        )
    return _collect(list(value), _parse_json_op)


def operations_to_json(ops: Sequence[Operation]) -> list[dict[str, object]]:
    """The stored (and canonical) form; `parse_operations_json` reads it back unchanged."""
    stored: list[dict[str, object]] = []
    for op in ops:
        entry: dict[str, object] = {"op": OP_NAMES[type(op)]}
        if isinstance(op, Rotate):
            degrees = op.degrees
            entry["degrees"] = int(degrees) if float(degrees).is_integer() else degrees
        elif isinstance(op, Resize | ForceResize):
            entry["width"], entry["height"] = op.width, op.height
        elif isinstance(op, Convert):
            entry["format"] = op.format
        else:
            entry["quality"] = op.quality
        stored.append(entry)
    return stored


def _collect(items: Sequence[_Item], parse: Callable[[_Item], Operation]) -> tuple[Operation, ...]:
    ops: list[Operation] = []
    errors: list[FieldError] = []
    if len(items) > MAX_OPERATIONS:
        errors.append(FieldError("operations", f"at most {MAX_OPERATIONS} operations"))
    for index, item in enumerate(items):
        try:
            ops.append(parse(item))
        except (ValueError, TypeError) as exc:
            errors.append(FieldError(f"operations[{index}]", str(exc)))
    if errors:
        raise InvalidInput("Invalid operations", errors)
    return tuple(ops)


def _names() -> str:
    return ", ".join(OP_NAMES.values())

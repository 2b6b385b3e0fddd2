"""The two input forms of image operations, their errors, and the stored form."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockroom.domain.errors import FieldError, InvalidInput
from stockroom.domain.operations import (
    DEFAULT_PIPELINE,
    IMAGE_FORMATS,
    MAX_DEGREES,
    MAX_OPERATIONS,
    MAX_SIZE,
    Compress,
    Convert,
    ForceResize,
    Operation,
    Resize,
    Rotate,
    is_default_pipeline,
    operations_to_json,
    parse_operations_json,
    parse_operations_text,
)

EXAMPLE_OPS = (
    Rotate(90),
    Resize(800, 600),
    ForceResize(300, 300),
    Convert("webp"),
    Compress(60),
)


def test_text_form_from_the_contract_parses_in_order() -> None:
    text = "rotate,90;resize,800x600;force_resize,300x300;convert,webp;compress,60"
    assert parse_operations_text(text) == EXAMPLE_OPS


def test_json_form_from_the_contract_parses_in_order() -> None:
    raw = [
        {"op": "rotate", "degrees": 90},
        {"op": "resize", "width": 800, "height": 600},
        {"op": "force_resize", "width": 300, "height": 300},
        {"op": "convert", "format": "webp"},
        {"op": "compress", "quality": 60},
    ]
    assert parse_operations_json(raw) == EXAMPLE_OPS


def test_text_form_tolerates_spaces_case_and_a_trailing_semicolon() -> None:
    assert parse_operations_text(" Rotate, -45.5 ; RESIZE,10X20; convert,JPG;") == (
        Rotate(-45.5),
        Resize(10, 20),
        Convert("jpeg"),
    )


@pytest.mark.parametrize("empty", ["", "  ", ";;"])
def test_empty_text_means_the_default_pipeline(empty: str) -> None:
    assert parse_operations_text(empty) == DEFAULT_PIPELINE
    assert is_default_pipeline(parse_operations_text(empty))


@pytest.mark.parametrize("empty", [None, []])
def test_absent_or_empty_json_means_the_default_pipeline(empty: list[object] | None) -> None:
    assert parse_operations_json(empty) == DEFAULT_PIPELINE


def test_every_bad_text_operation_is_reported_with_its_index() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_operations_text("rotate,90;resize,0x5;blur,3;convert,gif;compress;compress,101")
    fields = {error.field: error.message for error in caught.value.errors}
    assert set(fields) == {f"operations[{i}]" for i in (1, 2, 3, 4, 5)}
    assert "between 1 and 10000" in fields["operations[1]"]
    assert "unknown operation 'blur'" in fields["operations[2]"]
    assert "jpeg, png, webp, avif" in fields["operations[3]"]
    assert "needs an argument" in fields["operations[4]"]
    assert "between 1 and 100" in fields["operations[5]"]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("not an object", "must be an object"),
        ({"op": "blur"}, "op must be one of"),
        ({"degrees": 90}, "op must be one of"),
        ({"op": "resize", "width": 10}, "missing height"),
        ({"op": "resize", "width": 10, "height": 10, "depth": 3}, "does not take depth"),
        ({"op": "resize", "width": 10.5, "height": 10}, "width must be an integer"),
        ({"op": "resize", "width": True, "height": 10}, "width must be an integer"),
        ({"op": "force_resize", "width": 10, "height": MAX_SIZE + 1}, "between 1 and 10000"),
        ({"op": "rotate", "degrees": "90"}, "degrees must be a number"),
        ({"op": "rotate", "degrees": math.inf}, "finite"),
        ({"op": "rotate", "degrees": math.nan}, "finite"),
        # Too large to store as JSON (orjson: 64-bit) or to test as a float (OverflowError).
        ({"op": "rotate", "degrees": 10**400}, "between -36000 and 36000"),
        ({"op": "rotate", "degrees": 1e300}, "between -36000 and 36000"),
        ({"op": "convert", "format": "gif"}, "format must be one of"),
        ({"op": "convert", "format": 3}, "format must be a string"),
        ({"op": "compress", "quality": 0}, "between 1 and 100"),
        ({"op": "compress", "quality": "60"}, "quality must be an integer"),
    ],
)
def test_bad_json_operation_is_a_field_error(item: object, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_operations_json([{"op": "rotate", "degrees": 90}, item])
    assert [error.field for error in caught.value.errors] == ["operations[1]"]
    assert message in caught.value.errors[0].message


@pytest.mark.parametrize("value", [{"op": "rotate"}, "rotate,90", 3])
def test_json_operations_must_be_a_list(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_operations_json(value)
    assert caught.value.errors[0].field == "operations"


def test_too_many_operations_are_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_operations_text(";".join(["rotate,90"] * (MAX_OPERATIONS + 1)))
    assert caught.value.errors[0].field == "operations"


def test_rotate_accepts_any_finite_angle() -> None:
    assert parse_operations_text("rotate,12.5;rotate,-720;rotate,1e3") == (
        Rotate(12.5),
        Rotate(-720),
        Rotate(1000),
    )


def test_constructors_enforce_the_bounds_too() -> None:
    with pytest.raises(ValueError, match="width"):
        Resize(0, 10)
    with pytest.raises(ValueError, match="quality"):
        Compress(101)
    with pytest.raises(ValueError, match="format"):
        Convert("bmp")  # type: ignore[arg-type]


def test_stored_form_is_the_json_form() -> None:
    assert operations_to_json(EXAMPLE_OPS) == [
        {"op": "rotate", "degrees": 90},
        {"op": "resize", "width": 800, "height": 600},
        {"op": "force_resize", "width": 300, "height": 300},
        {"op": "convert", "format": "webp"},
        {"op": "compress", "quality": 60},
    ]


sizes = st.integers(min_value=1, max_value=MAX_SIZE)
operations: st.SearchStrategy[Operation] = st.one_of(
    st.builds(Rotate, st.floats(-MAX_DEGREES, MAX_DEGREES, allow_nan=False, width=32)),
    st.builds(Resize, sizes, sizes),
    st.builds(ForceResize, sizes, sizes),
    st.builds(Convert, st.sampled_from(IMAGE_FORMATS)),
    st.builds(Compress, st.integers(min_value=1, max_value=100)),
)


@given(st.lists(operations, max_size=MAX_OPERATIONS))
def test_stored_form_reads_back_unchanged(ops: list[Operation]) -> None:
    assert parse_operations_json(operations_to_json(ops)) == tuple(ops)


def _as_text(op: Operation) -> str:
    stored = operations_to_json([op])[0]
    args = [str(value) for key, value in stored.items() if key != "op"]
    return f"{stored['op']},{'x'.join(args)}"


@given(st.lists(operations, max_size=MAX_OPERATIONS))
def test_text_form_agrees_with_json_form(ops: list[Operation]) -> None:
    text = ";".join(_as_text(op) for op in ops)
    assert parse_operations_text(text) == tuple(ops)


def _errors_of(parse: Callable[[Any], object], value: object) -> list[FieldError] | None:
    """The field errors `parse` raised, or None if it accepted `value`."""
    try:
        parse(value)
    except InvalidInput as exc:
        return exc.errors
    return None


@given(st.text(max_size=200))
def test_text_parser_only_ever_raises_invalid_input(text: str) -> None:
    errors = _errors_of(parse_operations_text, text)
    assert errors is None or errors
    assert all(error.field.startswith("operations") for error in errors or [])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["op", "degrees", "width", "height", "x"]), children)
    ),
    max_leaves=10,
)


@given(st.lists(json_values, max_size=5))
def test_json_parser_only_ever_raises_invalid_input(raw: list[object]) -> None:
    errors = _errors_of(parse_operations_json, raw)
    assert errors is None or errors

"""Annotated field types for request schemas, enforcing the domain's rules in Pydantic."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, StringConstraints, WithJsonSchema

from stockroom.domain import rules
from stockroom.domain.webhooks import callback_url_problem


def _text(value: str) -> str:
    problem = rules.text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _image_url(value: str) -> str:
    problem = rules.image_url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_text)]
ProductName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=rules.MAX_NAME_LENGTH),
    AfterValidator(_not_blank),
    AfterValidator(_text),
]
Description = Annotated[
    str, StringConstraints(max_length=rules.MAX_DESCRIPTION_LENGTH), AfterValidator(_text)
]
Sku = Annotated[
    str,
    StringConstraints(min_length=1, max_length=rules.MAX_SKU_LENGTH),
    AfterValidator(_not_blank),
    AfterValidator(_text),
]
ImageUrl = Annotated[
    str,
    StringConstraints(max_length=rules.MAX_URL_LENGTH),
    AfterValidator(_image_url),
    WithJsonSchema({"type": "string", "format": "uri", "maxLength": rules.MAX_URL_LENGTH}),
]


def _callback_url(value: str) -> str:
    problem = callback_url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# Checked again at delivery, on the address connected to (DNS may change in between).
CallbackUrl = Annotated[
    str,
    StringConstraints(max_length=rules.MAX_URL_LENGTH),
    AfterValidator(_callback_url),
    WithJsonSchema({"type": "string", "format": "uri", "maxLength": rules.MAX_URL_LENGTH}),
]
Price = Annotated[
    Decimal,
    BeforeValidator(rules.parse_price),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": float(rules.MAX_PRICE)},
                {"type": "string", "pattern": r"^ *[0-9]{1,8}(\.[0-9]{1,2}0*)? *$"},
            ],
            "description": "0 to 99,999,999.99, at most 2 decimals; exact (no float rounding)",
        }
    ),
]

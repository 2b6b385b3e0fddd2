"""Opaque list cursors: base64url JSON of where the previous page ended."""

from __future__ import annotations

import base64
import binascii

import orjson

from stockroom.domain.errors import FieldError, InvalidInput
from stockroom.domain.queries import Cursor

MAX_CURSOR_LENGTH = 1024


def encode_cursor(cursor: Cursor, sort: str) -> str:
    raw = orjson.dumps({"s": sort, "v": cursor.value, "i": cursor.id})
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(token: str, sort: str) -> Cursor:
    """Refuse cursors that were forged, truncated or made for another sort order."""
    bad = InvalidInput("invalid cursor", [FieldError("cursor", "is not a cursor from this list")])
    if len(token) > MAX_CURSOR_LENGTH:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad from None
    if not isinstance(data, dict) or data.get("s") != sort:
        raise bad
    value, ident = data.get("v"), data.get("i")
    if not isinstance(value, str) or not isinstance(ident, int) or isinstance(ident, bool):
        raise bad
    if not 0 < ident < 2**63 or len(value) > 300:
        raise bad
    return Cursor(value=value, id=ident)

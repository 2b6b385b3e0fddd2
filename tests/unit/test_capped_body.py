"""The capped decoder: any stack of gzip/deflate undone within the cap, never past it."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockroom.domain.errors import ImageDecodeError, ImageTooLarge
from stockroom.pipeline.capped_body import CappedDecoder, read_capped


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _encode(data: bytes, encodings: Sequence[str]) -> bytes:
    for name in encodings:  # applied left to right, as the header lists them
        if name == "gzip":
            data = gzip.compress(data)
        elif name == "deflate":
            data = zlib.compress(data)
        elif name == "raw-deflate":
            packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            data = packer.compress(data) + packer.flush()
    return data


@given(
    body=st.binary(max_size=5000),
    encodings=st.lists(st.sampled_from(["gzip", "deflate", "raw-deflate"]), max_size=3),
)
async def test_any_stack_of_encodings_decodes_to_the_body(
    body: bytes, encodings: list[str]
) -> None:
    header = ", ".join("deflate" if name == "raw-deflate" else name for name in encodings)
    wire = _encode(body, encodings)

    cap = max(len(body), len(wire))  # small bodies grow when compressed

    assert await read_capped(_chunks(wire), header or None, max_bytes=cap) == body


async def test_identity_is_passed_through() -> None:
    assert await read_capped(_chunks(b"abc" * 1000), "identity", max_bytes=3000) == b"abc" * 1000


async def test_a_stacked_bomb_stops_at_the_cap() -> None:
    wire = _encode(bytes(64 * 1024 * 1024), ["gzip", "gzip"])
    assert len(wire) < 100_000

    with pytest.raises(ImageTooLarge):
        await read_capped(_chunks(wire), "gzip, gzip", max_bytes=1_000_000)


def test_no_step_produces_more_than_a_bounded_piece() -> None:
    """Each piece is counted before the next one is made: none is a bomb's whole output."""
    decoder = CappedDecoder("gzip, gzip")
    wire = _encode(bytes(32 * 1024 * 1024), ["gzip", "gzip"])

    pieces = [len(piece) for piece in decoder.feed(wire)]

    assert sum(pieces) == 32 * 1024 * 1024
    assert max(pieces) <= 64 * 1024


async def test_wire_bytes_past_the_cap_are_refused_too() -> None:
    with pytest.raises(ImageTooLarge):
        await read_capped(_chunks(bytes(5000)), None, max_bytes=4999)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
async def test_an_encoding_we_cannot_bound_is_refused(encoding: str) -> None:
    with pytest.raises(ImageDecodeError):
        await read_capped(_chunks(b"x"), encoding, max_bytes=1000)


async def test_more_layers_than_allowed_are_refused() -> None:
    with pytest.raises(ImageDecodeError):
        await read_capped(_chunks(b"x"), "gzip, gzip, gzip, gzip", max_bytes=1000)


async def test_corrupt_and_truncated_bodies_are_decode_errors() -> None:
    wire = gzip.compress(b"hello" * 1000)
    with pytest.raises(ImageDecodeError):
        await read_capped(_chunks(b"\x1f\x8b" + b"\x00" * 50), "gzip", max_bytes=10_000)
    with pytest.raises(ImageDecodeError):
        await read_capped(_chunks(wire[: len(wire) // 2]), "gzip", max_bytes=10_000)

"""Reading a response body from an untrusted server without holding more than a cap.

httpx decodes `Content-Encoding` before its callers can count anything, and one compressed
chunk can inflate a thousandfold per layer (`gzip, gzip` turns a kilobyte into a gigabyte).
So the body is read raw and decoded here, layer by layer, each step producing at most
`_STEP` bytes, and the decoded bytes are counted against the cap as they appear. Every
fetch of a user-supplied URL reads its body through `read_capped`.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, Iterator
from typing import Protocol

from stockroom.domain.errors import ImageDecodeError, ImageTooLarge

_STEP = 64 * 1024  # the most one decoder produces before its output is counted
MAX_ENCODING_LAYERS = 3
_IDENTITY = frozenset({"", "identity"})


class _Layer(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> Iterator[bytes]: ...


class _ZlibLayer:
    """gzip (`wbits=MAX_WBITS | 16`) or deflate, with output bounded per call."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._decoder = zlib.decompressobj(wbits)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            try:
                out = self._decoder.decompress(data, _STEP)
            except zlib.error as exc:
                if self._wbits == zlib.MAX_WBITS and not self._started:
                    # "deflate" is zlib-wrapped by the RFC, raw in some servers: as httpx does.
                    self._wbits = -zlib.MAX_WBITS
                    self._decoder = zlib.decompressobj(self._wbits)
                    continue
                raise ImageDecodeError("the compressed body is corrupt") from exc
            self._started = True
            data = self._decoder.unconsumed_tail
            if out:
                yield out
            # A full step may leave output inside the decoder: ask again, with no input.
            if not data and len(out) < _STEP:
                return

    def finish(self) -> Iterator[bytes]:
        yield from self.feed(b"")
        if not self._decoder.eof and self._started:
            raise ImageDecodeError("the compressed body is truncated")


def _layer(encoding: str) -> _Layer:
    if encoding in ("gzip", "x-gzip"):
        return _ZlibLayer(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return _ZlibLayer(zlib.MAX_WBITS)
    raise ImageDecodeError(f"unsupported content encoding {encoding!r}")


class CappedDecoder:
    """Undoes a `Content-Encoding` stack (applied left to right, undone right to left)."""

    def __init__(self, content_encoding: str | None) -> None:
        names = [name.strip().lower() for name in (content_encoding or "").split(",")]
        encodings = [name for name in names if name not in _IDENTITY]
        if len(encodings) > MAX_ENCODING_LAYERS:
            raise ImageDecodeError(f"more than {MAX_ENCODING_LAYERS} content encodings")
        self._layers = [_layer(name) for name in reversed(encodings)]

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, data)

    def finish(self) -> Iterator[bytes]:
        for index, layer in enumerate(self._layers):
            for piece in layer.finish():
                yield from self._through(index + 1, piece)

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._layers):
            if data:
                yield data
            return
        for piece in self._layers[index].feed(data):
            yield from self._through(index + 1, piece)


async def read_capped(
    raw: AsyncIterable[bytes], content_encoding: str | None, max_bytes: int
) -> bytes:
    """The decoded body of `raw` (bytes as on the wire), or ImageTooLarge as soon as either
    the wire bytes or the decoded bytes pass `max_bytes`; ImageDecodeError for an encoding
    that is unknown, corrupt or truncated."""
    decoder = CappedDecoder(content_encoding)
    chunks: list[bytes] = []
    wire = size = 0

    def keep(pieces: Iterator[bytes]) -> None:
        nonlocal size
        for piece in pieces:
            size += len(piece)
            if size > max_bytes:
                raise ImageTooLarge(f"the body exceeded {max_bytes:,} bytes")
            chunks.append(piece)

    async for chunk in raw:
        wire += len(chunk)
        if wire > max_bytes:
            raise ImageTooLarge(f"the download exceeded {max_bytes:,} bytes")
        keep(decoder.feed(chunk))
    keep(decoder.finish())
    return b"".join(chunks)  # one copy of the body, not a growing buffer's several

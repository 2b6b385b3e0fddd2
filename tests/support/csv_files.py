"""CSV uploads for the bulk import's tests, written by `csv.writer` as a spreadsheet would,
and cut into the uneven chunks a streamed upload arrives in."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator, Sequence

HEADER = ("Serial Number", "Product Name", "Input Image URLs", "Price", "Description")


def csv_bytes(
    records: Iterable[Sequence[str]], *, bom: bool = False, line_end: str = "\r\n"
) -> bytes:
    """UTF-8 CSV. Cells are quoted only when needed, except that csv.writer quotes a line
    break only if `line_end` has it: a stray \\r in an LF file would end the row."""
    records = [list(record) for record in records]
    stray = any(
        ch in cell and ch not in line_end for record in records for cell in record for ch in "\r\n"
    )
    text = io.StringIO()
    if stray:
        csv.writer(text, lineterminator=line_end, quoting=csv.QUOTE_ALL).writerows(records)
    else:
        csv.writer(text, lineterminator=line_end).writerows(records)
    return ("\ufeff" if bom else "").encode() + text.getvalue().encode()


def chunked(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """`data` in pieces of the given sizes, repeated until it is all given."""
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(data):
            return
        yield data[start : start + size]
        start += size

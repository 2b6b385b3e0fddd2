"""The bulk import's CSV reader: it checks a whole upload as the upload streams in, so a
50 MB file is never held in memory, and it lists every problem by row and column at once."""

from __future__ import annotations

import codecs
import csv
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import NoReturn

from stockroom.domain import rules
from stockroom.domain.errors import InvalidInput

SKU, NAME, URLS = "Serial Number", "Product Name", "Input Image URLs"
PRICE, DESCRIPTION = "Price", "Description"
REQUIRED_COLUMNS = (SKU, NAME, URLS)
KNOWN_COLUMNS = {name.casefold(): name for name in (*REQUIRED_COLUMNS, PRICE, DESCRIPTION)}
# Bounds what an unclosed quote, or binary data with no line break, makes the reader hold.
MAX_RECORD_CHARS = 1_048_576
# A line with its ending (\n, \r\n or a lone \r, as `newline=""` reads), or a last partial one.
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


@dataclass(frozen=True, slots=True)
class ImportLimits:
    max_rows: int = 100_000  # after the header
    max_urls_per_row: int = rules.MAX_IMAGES  # a product holds MAX_IMAGES at most anyway
    max_problems: int = 1000

    def __post_init__(self) -> None:
        if min(self.max_rows, self.max_urls_per_row, self.max_problems) < 1:
            raise ValueError("import limits must be at least 1")


@dataclass(frozen=True, slots=True)
class CsvProblem:
    """Where a spreadsheet shows the problem: row 1 is the header, and a quoted cell that
    spans lines is still one row. `column` is spelt as in the file's header, trimmed."""

    row: int
    column: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ImportRow:
    row: int
    sku: str  # trimmed
    name: str  # trimmed
    image_urls: tuple[str, ...]
    price: Decimal | None  # None: blank, or no Price column
    description: str | None  # as written; None: blank, or no Description column
    cells: tuple[str, ...]  # as written, in the file's column order (for the output CSV)


@dataclass(frozen=True, slots=True)
class ParsedImport:
    columns: tuple[str, ...]  # the header exactly as given
    rows: list[ImportRow]


class CsvInvalid(InvalidInput):
    """The file has problems: the first `max_problems` are listed, `total` counts them all."""

    code = "invalid_csv"
    title = "The CSV file has problems"

    def __init__(self, problems: list[CsvProblem], total: int) -> None:
        listed = "" if total == len(problems) else f"; the first {len(problems)} are listed"
        super().__init__(f"{total} problem{'s' if total != 1 else ''} in the CSV file{listed}")
        self.problems = problems
        self.total = total


class CsvUnreadable(CsvInvalid):
    """Reading stopped at the last problem listed: not UTF-8 text, no usable header, ..."""

    code = "unreadable_csv"
    title = "The CSV file cannot be read"


class CsvTooManyRows(CsvUnreadable):
    code = "too_many_rows"
    title = "The CSV file has too many rows"


class _NeedMoreLines(Exception):
    """csv asked for a line that has not arrived yet."""


class _UnclosedQuote(Exception):
    """The file ended inside a quoted cell."""


class _RecordTooLong(Exception):
    """One record grew past MAX_RECORD_CHARS."""


class _LineFeed:
    """What `csv.reader` pulls lines from. csv forgets a record it could not finish, so the
    lines of the record in progress are kept, to parse it again from its start."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()
        self.record: list[str] = []
        self.record_chars = 0
        self.stalled_chars = 0  # the size of the record csv could not finish, if any
        self.arrived_chars = 0  # queued since then
        self.final = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self.queue:
            if not self.final:
                raise _NeedMoreLines
            if self.record:
                raise _UnclosedQuote
            raise StopIteration
        line = self.queue.popleft()
        self.record.append(line)
        self.record_chars += len(line)
        if self.record_chars > MAX_RECORD_CHARS:
            raise _RecordTooLong
        return line

    def add(self, lines: list[str]) -> bool:
        """Queue lines; True when worth parsing. A stalled record is parsed again only once
        it has doubled: parsing it on every small chunk would be quadratic."""
        self.queue.extend(lines)
        self.arrived_chars += sum(map(len, lines))
        return self.final or self.arrived_chars >= self.stalled_chars

    def completed(self) -> None:
        self.record.clear()
        self.record_chars = self.stalled_chars = 0

    def rewind(self) -> None:
        self.queue.extendleft(reversed(self.record))
        self.stalled_chars, self.arrived_chars = self.record_chars, 0
        self.record.clear()
        self.record_chars = 0


@dataclass(frozen=True, slots=True)
class _Header:
    columns: tuple[str, ...]
    index: dict[str, int]  # known column -> position
    names: dict[str, str]  # known column -> its name as the file spells it, trimmed


class CsvImportReader:
    """Feed the upload's bytes with `feed`, then call `finish` for the rows. Both raise
    `CsvInvalid` (and no other error) for a bad file, as soon as the problem is certain."""

    def __init__(self, limits: ImportLimits | None = None) -> None:
        self._limits = limits or ImportLimits()
        self._max_urls = min(self._limits.max_urls_per_row, rules.MAX_IMAGES)
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._tail: list[str] = []  # the text after the last line break
        self._tail_chars = 0
        self._lines = _LineFeed()
        self._records = csv.reader(self._lines)
        self._header: _Header | None = None
        self._row = 0  # records read, the header included
        self._blank_from: int | None = None  # the first of the blank rows read last
        self._rows: list[ImportRow] = []
        self._skus: dict[str, int] = {}  # -> the row that has it
        self._problems: list[CsvProblem] = []
        self._total = 0
        self._failed: CsvInvalid | None = None
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        self._check_open()
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            self._not_utf8(exc)
        self._take_text(text, final=False)

    def finish(self) -> ParsedImport:
        self._check_open()
        self._finished = True
        try:
            text = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            self._not_utf8(exc)
        self._take_text(text, final=True)
        if self._header is None:
            columns = ", ".join(REQUIRED_COLUMNS)
            self._fail(f"the file is empty; its first row must name the columns {columns}")
        if not self._rows and not self._total:
            self._add(CsvProblem(2, None, "the file has no rows after the header"))
        if self._total:
            raise self._failure(CsvInvalid)
        return ParsedImport(self._header.columns, self._rows)

    # -- bytes to records ----------------------------------------------------------------
    def _check_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._finished:
            raise RuntimeError("this CSV reader has finished")

    def _not_utf8(self, exc: UnicodeDecodeError) -> NoReturn:
        """Read what came before the bad byte, so that the problem names its row."""
        self._take_text(exc.object[: exc.start].decode("utf-8", "replace"), final=False)
        bad = exc.object[exc.start : exc.start + 1].hex()
        self._fail(f"is not UTF-8 text (byte 0x{bad}); save the file as CSV UTF-8")

    def _take_text(self, text: str, *, final: bool) -> None:
        if (nul := text.find("\x00")) >= 0:
            self._take_text(text[:nul], final=False)
            self._fail("contains NUL bytes: this is not a CSV text file")
        pending_cr = bool(self._tail) and self._tail[-1].endswith("\r")
        if not final and not pending_cr and "\n" not in text and "\r" not in text:
            self._grow_tail(text)
            return
        lines = _LINE.findall("".join(self._tail) + text)
        self._tail, self._tail_chars = [], 0
        if not final and lines and not lines[-1].endswith("\n"):
            self._grow_tail(lines.pop())  # unfinished, or a "\r" before the next chunk's "\n"?
        self._lines.final = final
        if self._lines.add(lines):
            self._read_records()

    def _grow_tail(self, text: str) -> None:
        if text:
            self._tail.append(text)
            self._tail_chars += len(text)
        if self._tail_chars > MAX_RECORD_CHARS:
            self._fail(f"has a line longer than {MAX_RECORD_CHARS} characters")

    def _read_records(self) -> None:
        while True:
            try:
                cells = next(self._records)
            except _NeedMoreLines:
                self._lines.rewind()
                return
            except StopIteration:
                return
            except _UnclosedQuote:
                self._fail("has a quoted cell that is never closed")
            except _RecordTooLong:
                self._fail(f"is longer than {MAX_RECORD_CHARS} characters; is a quote left open?")
            except csv.Error as exc:  # a cell over csv.field_size_limit()
                self._fail(f"cannot be read as CSV ({exc}); is a quote left open?")
            self._lines.completed()
            self._take_record(cells)

    # -- records to rows -----------------------------------------------------------------
    def _take_record(self, cells: list[str]) -> None:
        self._row += 1
        if self._header is None:
            self._header = self._read_header(cells)
        elif not any(cell.strip() for cell in cells):
            self._blank_from = self._blank_from or self._row  # ignored if no row follows
        else:
            if self._row - 1 > self._limits.max_rows:
                message = f"the file has more than {self._limits.max_rows} rows after the header"
                self._fail(message, CsvTooManyRows, row=self._row)
            for blank in range(self._blank_from or self._row, self._row):
                self._add(CsvProblem(blank, None, "is blank; delete it or fill it in"))
            self._blank_from = None
            self._take_row(self._header, cells)

    def _read_header(self, cells: list[str]) -> _Header:
        index: dict[str, int] = {}
        names: dict[str, str] = {}
        seen: dict[str, int] = {}
        for position, raw in enumerate(cells):
            name = raw.strip()
            first = seen.setdefault(name.casefold(), position)
            if name and first != position:
                where = f"columns {first + 1} and {position + 1}"
                self._add(CsvProblem(1, name, f"is in the header twice ({where})"))
            elif known := KNOWN_COLUMNS.get(name.casefold()):
                index[known], names[known] = position, name
        hint = "; columns must be separated by commas" if _other_separator(cells) else ""
        for missing in (column for column in REQUIRED_COLUMNS if column not in index):
            self._add(CsvProblem(1, missing, f"is a required column, missing in the header{hint}"))
        if self._total:
            raise self._failure(CsvUnreadable)
        return _Header(tuple(cells), index, names)

    def _take_row(self, header: _Header, cells: list[str]) -> None:
        if len(cells) != len(header.columns):
            message = f"has {len(cells)} cells; the header has {len(header.columns)} columns"
            self._add(CsvProblem(self._row, None, message))
            return
        row, found = _read_row(self._row, cells, header.index, self._max_urls)
        if row.sku and all(column != SKU for column, _ in found):
            first = self._skus.setdefault(row.sku, self._row)
            if first != self._row:
                found.append((SKU, f"repeats the Serial Number of row {first}"))
        for column, message in sorted(found, key=lambda problem: header.index[problem[0]]):
            self._add(CsvProblem(self._row, header.names[column], message))
        if not self._total:
            self._rows.append(row)

    # -- problems --------------------------------------------------------------------------
    def _add(self, problem: CsvProblem) -> None:
        self._total += 1
        self._rows.clear()  # nothing is imported once a row is bad
        if len(self._problems) < self._limits.max_problems:
            self._problems.append(problem)

    def _fail(
        self, message: str, error: type[CsvInvalid] = CsvUnreadable, row: int | None = None
    ) -> NoReturn:
        """Stop reading: list the problem (even when the list is full) and raise. By default
        it is in the record being read, the one after the last record completed."""
        if len(self._problems) == self._limits.max_problems:
            self._problems.pop()
        self._add(CsvProblem(self._row + 1 if row is None else row, None, message))
        raise self._failure(error)

    def _failure(self, error: type[CsvInvalid]) -> CsvInvalid:
        self._failed = error(self._problems, self._total)
        return self._failed


def read_import(chunks: Iterable[bytes], limits: ImportLimits | None = None) -> ParsedImport:
    """Read a whole file from its chunks (the CLI and tests; the API feeds as it streams)."""
    reader = CsvImportReader(limits)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.finish()


def _read_row(
    number: int, cells: list[str], index: dict[str, int], max_urls: int
) -> tuple[ImportRow, list[tuple[str, str]]]:
    """A row's known cells, parsed, with its problems as (known column, message)."""
    sku, name = cells[index[SKU]].strip(), cells[index[NAME]].strip()
    found = [(SKU, m) for m in _text_problems(sku, rules.MAX_SKU_LENGTH, required=True)]
    found += [(NAME, m) for m in _text_problems(name, rules.MAX_NAME_LENGTH, required=True)]
    urls, url_problems = _image_urls(cells[index[URLS]], max_urls)
    found += [(URLS, m) for m in url_problems]
    price, price_problem = _price(cells[index[PRICE]] if PRICE in index else "")
    found += [(PRICE, price_problem)] if price_problem else []
    description = cells[index[DESCRIPTION]] if DESCRIPTION in index else ""
    limit = rules.MAX_DESCRIPTION_LENGTH
    found += [(DESCRIPTION, m) for m in _text_problems(description, limit, required=False)]
    kept = description if description.strip() else None
    return ImportRow(number, sku, name, urls, price, kept, tuple(cells)), found


def _text_problems(value: str, limit: int, *, required: bool) -> list[str]:
    if not value.strip():
        return ["must not be empty"] if required else []
    if len(value) > limit:
        return [f"must be at most {limit} characters"]
    problem = rules.text_problem(value)
    return [problem] if problem else []


def _image_urls(cell: str, most: int) -> tuple[tuple[str, ...], list[str]]:
    """Comma-separated URLs, each trimmed; an empty cell is a product with no images."""
    if not cell.strip():
        return (), []
    urls = tuple(url.strip() for url in cell.split(","))
    problems = [f"has {len(urls)} URLs; at most {most} are allowed"] if len(urls) > most else []
    for number, url in enumerate(urls, start=1):
        problem = rules.image_url_problem(url) if url else "is empty (two commas in a row?)"
        if problem:
            shown = f" ({url[:80]}{'...' if len(url) > 80 else ''})" if url else ""
            problems.append(f"URL {number}{shown} {problem}")
    return urls, problems


def _price(cell: str) -> tuple[Decimal | None, str | None]:
    """A blank cell, like a missing Price column, leaves the price unset."""
    if not cell.strip():
        return None, None
    try:
        return rules.parse_price(cell.strip()), None
    except ValueError as exc:
        return None, str(exc)


def _other_separator(header: list[str]) -> bool:
    """A header read as one cell was likely written with `;` or tabs (some spreadsheets)."""
    return len(header) == 1 and any(separator in header[0] for separator in ";\t")

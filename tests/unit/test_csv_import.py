"""The bulk import's CSV reader: what a spreadsheet writes reads back exactly, however the
upload is cut into chunks, and every bad file is a CsvInvalid naming its row and column."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockroom.domain import rules
from stockroom.domain.csv_import import (
    MAX_RECORD_CHARS,
    CsvImportReader,
    CsvInvalid,
    CsvProblem,
    CsvTooManyRows,
    CsvUnreadable,
    ImportLimits,
    ImportRow,
    ParsedImport,
    read_import,
)
from stockroom.domain.errors import InvalidInput
from tests.support.csv_files import HEADER, chunked, csv_bytes

SKU, NAME, URLS, PRICE, DESCRIPTION = HEADER
EXTRA = "Notes"
LAMP = ["L-1", "Desk lamp", "https://img.example.com/lamp.jpg", "19.99", "A lamp"]
CHAIR = ["C-1", "Chair", "", "", ""]

# Text a spreadsheet cell may hold: anything but NUL (and surrogates, which UTF-8 cannot
# carry), with the characters that need quoting well represented.
CHARS = st.sampled_from(',"\r\n \t') | st.characters(codec="utf-8", exclude_characters="\x00")
TEXT = st.text(CHARS, max_size=30)
TRIMMED = st.text(CHARS, min_size=1, max_size=40).map(str.strip).filter(bool)
URL = st.builds(
    "https://{}.example.com/{}.jpg?w={}".format,
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10),
    st.text("abcXYZ019-._~%/", max_size=12),
    st.integers(0, 4000),
)
PRICES = st.none() | st.integers(0, 9_999_999_999).map(lambda cents: Decimal(cents).scaleb(-2))
SPELLINGS: st.SearchStrategy[Callable[[str], str]] = st.sampled_from(
    [str, str.lower, str.upper, str.title, str.swapcase]
)
PADDING = st.sampled_from(["", " ", "  ", "\t"])


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    urls: list[str]
    separator: str
    price: Decimal | None
    description: str | None
    notes: str

    def cell(self, column: str) -> str:
        return {
            SKU: self.sku,
            NAME: self.name,
            URLS: self.separator.join(self.urls),
            PRICE: "" if self.price is None else str(self.price),
            DESCRIPTION: self.description or "",
            EXTRA: self.notes,
        }[column]


PRODUCTS = st.lists(
    st.builds(
        Product,
        sku=TRIMMED.filter(lambda sku: len(sku) <= rules.MAX_SKU_LENGTH),
        name=TRIMMED,
        urls=st.lists(URL, max_size=4),
        separator=st.sampled_from([",", ", ", " ,  "]),
        price=PRICES,
        description=st.none() | TEXT,
        notes=TEXT,
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda product: product.sku,
)


@st.composite
def headers(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """(the known columns in file order, how the file spells each: any case, padded)."""
    optional = draw(st.lists(st.sampled_from([PRICE, DESCRIPTION, EXTRA]), unique=True))
    columns = draw(st.permutations([SKU, NAME, URLS, *optional]))
    spelt = [draw(PADDING) + draw(SPELLINGS)(column) + draw(PADDING) for column in columns]
    return columns, spelt


LINE_ENDS = st.sampled_from(["\r\n", "\n", "\r"])
CHUNK_SIZES = st.lists(st.integers(1, 40), min_size=1, max_size=8)


def expected_row(number: int, product: Product, columns: list[str]) -> ImportRow:
    return ImportRow(
        row=number,
        sku=product.sku,
        name=product.name,
        image_urls=tuple(product.urls),
        price=product.price if PRICE in columns else None,
        description=product.description
        if DESCRIPTION in columns and product.description and product.description.strip()
        else None,
        cells=tuple(product.cell(column) for column in columns),
    )


def problems_of(data: bytes, limits: ImportLimits | None = None) -> list[CsvProblem]:
    with pytest.raises(CsvInvalid) as raised:
        read_import([data], limits)
    return raised.value.problems


def read_or_refuse(chunks: Iterable[bytes]) -> ParsedImport | CsvInvalid:
    try:
        return read_import(chunks)
    except CsvInvalid as exc:
        return exc


def feed_all(reader: CsvImportReader, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        reader.feed(chunk)


def the_problem(data: bytes, limits: ImportLimits | None = None) -> CsvProblem:
    [problem] = problems_of(data, limits)
    return problem


# -- valid files round-trip --------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    header=headers(), products=PRODUCTS, bom=st.booleans(), line_end=LINE_ENDS, sizes=CHUNK_SIZES
)
def test_what_a_spreadsheet_writes_reads_back_in_any_chunks(
    header: tuple[list[str], list[str]],
    products: list[Product],
    bom: bool,
    line_end: str,
    sizes: list[int],
) -> None:
    columns, spelt = header
    records = [spelt] + [[product.cell(column) for column in columns] for product in products]
    data = csv_bytes(records, bom=bom, line_end=line_end)

    parsed = read_import(chunked(data, sizes))

    assert parsed == ParsedImport(
        columns=tuple(spelt),
        rows=[expected_row(n, product, columns) for n, product in enumerate(products, start=2)],
    )


def test_every_split_point_reads_the_same_rows() -> None:
    # Splits inside the BOM, inside 2-, 3- and 4-byte characters, between \r and \n, and
    # inside a quoted cell that spans lines.
    data = csv_bytes(
        [HEADER, ["é-1", "Café «crème» 漢字 🙂", "", "1.50", 'two\r\nlines, "quoted"'], LAMP],
        bom=True,
    )
    whole = read_import([data])

    for cut in range(len(data) + 1):
        assert read_import([data[:cut], data[cut:]]) == whole
    assert read_import([data[i : i + 1] for i in range(len(data))]) == whole
    assert whole.rows[0].name == "Café «crème» 漢字 🙂"
    assert whole.rows[0].description == 'two\r\nlines, "quoted"'


def test_a_bom_is_read_as_no_text_and_a_file_without_one_reads_the_same() -> None:
    records = [HEADER, LAMP]

    with_bom = read_import([csv_bytes(records, bom=True)])

    assert with_bom == read_import([csv_bytes(records)])
    assert with_bom.columns[0] == SKU


@pytest.mark.parametrize("line_end", ["\r\n", "\n", "\r"])
def test_rows_are_records_not_lines(line_end: str) -> None:
    spanning = ["S-1", "Sofa", "", "", "first\nsecond\r\nthird"]
    data = csv_bytes([HEADER, spanning, ["S-2", "", "", "", ""]], line_end=line_end)

    assert problems_of(data) == [CsvProblem(3, NAME, "must not be empty")]


def test_header_names_match_in_any_case_and_padding_and_are_kept_as_written() -> None:
    header = ["  serial NUMBER", "PRODUCT NAME ", "\tinput image urls", "price", "Colour"]

    parsed = read_import([csv_bytes([header, ["A-1", "Lamp", "", "5", "red"]])])

    assert parsed.columns == tuple(header)
    assert parsed.rows == [
        ImportRow(2, "A-1", "Lamp", (), Decimal("5.00"), None, ("A-1", "Lamp", "", "5", "red"))
    ]
    bad = csv_bytes([header, ["A-1", "Lamp", "", "five", "red"]])
    assert the_problem(bad).column == "price"


def test_serial_number_and_name_are_trimmed_and_blank_optional_cells_are_unset() -> None:
    data = csv_bytes([HEADER, [" A-1 ", " Lamp\t", " https://a.example.com/x.jpg ", " ", "  "]])

    [row] = read_import([data]).rows

    assert (row.sku, row.name, row.image_urls) == ("A-1", "Lamp", ("https://a.example.com/x.jpg",))
    assert (row.price, row.description) == (None, None)


# -- a bad cell names its row and column -------------------------------------------------
CORRUPTIONS = [
    (SKU, "", "must not be empty"),
    (SKU, "s" * (rules.MAX_SKU_LENGTH + 1), f"must be at most {rules.MAX_SKU_LENGTH} characters"),
    (NAME, " \t ", "must not be empty"),
    (NAME, "n" * (rules.MAX_NAME_LENGTH + 1), "must be at most 255 characters"),
    (URLS, "ftp://img.example.com/a.jpg", "URL 1 (ftp://img.example.com/a.jpg) must be an"),
    (URLS, "https://a.example.com/a.jpg, not a url", "URL 2 (not a url) must not contain"),
    (URLS, "https://a.example.com/a.jpg,,https://b.example.com/b.jpg", "URL 2 is empty"),
    (URLS, "https://a.example.com/a.jpg,", "URL 2 is empty"),
    (PRICE, "abc", "must be a number or a decimal string"),
    (PRICE, "1.234", "must have at most 2 decimal places"),
    (PRICE, "-1", "must be at least 0"),
    (PRICE, "1e3", "must be a number or a decimal string"),
    (DESCRIPTION, "d" * (rules.MAX_DESCRIPTION_LENGTH + 1), "must be at most 10000 characters"),
]


@settings(max_examples=100, deadline=None)
@given(
    products=PRODUCTS,
    spellings=st.lists(SPELLINGS, min_size=5, max_size=5),
    corruption=st.sampled_from(CORRUPTIONS),
    data=st.data(),
)
def test_a_corrupted_cell_is_one_problem_naming_its_row_and_column(
    products: list[Product],
    spellings: list[Callable[[str], str]],
    corruption: tuple[str, str, str],
    data: st.DataObject,
) -> None:
    column, value, message = corruption
    spelt = [spell(name) for spell, name in zip(spellings, HEADER, strict=True)]
    records = [[product.cell(name) for name in HEADER] for product in products]
    bad = data.draw(st.integers(0, len(records) - 1), label="bad row")
    records[bad][HEADER.index(column)] = value
    upload = csv_bytes([spelt, *records])
    sizes = data.draw(CHUNK_SIZES, label="chunk sizes")

    with pytest.raises(CsvInvalid) as raised:
        read_import(chunked(upload, sizes))

    [problem] = raised.value.problems
    assert (problem.row, problem.column) == (bad + 2, spelt[HEADER.index(column)])
    assert problem.message.startswith(message)
    assert raised.value.total == 1
    assert type(raised.value) is CsvInvalid


def test_problems_are_capped_and_the_total_counts_them_all() -> None:
    rows = [[f"S-{n}", "", "", "", ""] for n in range(12)]

    with pytest.raises(CsvInvalid) as raised:
        read_import([csv_bytes([HEADER, *rows])], ImportLimits(max_problems=5))

    assert raised.value.problems == [CsvProblem(n, NAME, "must not be empty") for n in range(2, 7)]
    assert raised.value.total == 12
    assert str(raised.value) == "12 problems in the CSV file; the first 5 are listed"


def test_problems_of_one_row_come_in_column_order() -> None:
    header = [DESCRIPTION, PRICE, URLS, NAME, SKU]
    data = csv_bytes([header, ["d" * 10_001, "x", "ftp://a", "", ""]])

    assert [problem.column for problem in problems_of(data)] == header


def test_a_repeated_serial_number_is_a_problem_on_the_later_rows() -> None:
    data = csv_bytes([HEADER, LAMP, CHAIR, [" L-1", "Lamp again", "", "", ""], LAMP])

    assert problems_of(data) == [
        CsvProblem(4, SKU, "repeats the Serial Number of row 2"),
        CsvProblem(5, SKU, "repeats the Serial Number of row 2"),
    ]


def test_a_row_with_another_number_of_cells_than_the_header_is_a_problem() -> None:
    data = csv_bytes([HEADER, LAMP, ["X-1", "Short", ""], [*CHAIR, "extra"]])

    assert problems_of(data) == [
        CsvProblem(3, None, "has 3 cells; the header has 5 columns"),
        CsvProblem(4, None, "has 6 cells; the header has 5 columns"),
    ]


def test_blank_lines_at_the_end_are_ignored_and_in_the_middle_are_problems() -> None:
    body = csv_bytes([HEADER, LAMP, CHAIR]).decode()
    assert len(read_import([(body + "\r\n\r\n,,,,\r\n").encode()]).rows) == 2

    middle = csv_bytes([HEADER, LAMP, ["", "", "", "", ""], CHAIR])

    assert problems_of(middle) == [CsvProblem(3, None, "is blank; delete it or fill it in")]


# -- URLs ----------------------------------------------------------------------------------
def test_an_empty_url_cell_is_a_product_without_images() -> None:
    [_, chair] = read_import([csv_bytes([HEADER, LAMP, CHAIR])]).rows

    assert chair.image_urls == ()


def test_urls_are_split_on_commas_and_trimmed() -> None:
    cell = " https://a.example.com/1.jpg ,https://b.example.com/2.jpg,\thttps://c.example.com/3 "

    [row] = read_import([csv_bytes([HEADER, ["U-1", "Urls", cell, "", ""]])]).rows

    assert row.image_urls == (
        "https://a.example.com/1.jpg",
        "https://b.example.com/2.jpg",
        "https://c.example.com/3",
    )


def test_too_many_urls_in_a_row_is_a_problem() -> None:
    urls = ",".join(f"https://img.example.com/{n}.jpg" for n in range(3))
    data = csv_bytes([HEADER, ["U-1", "Urls", urls, "", ""]])

    assert the_problem(data, ImportLimits(max_urls_per_row=2)) == CsvProblem(
        2, URLS, "has 3 URLs; at most 2 are allowed"
    )
    assert read_import([data], ImportLimits(max_urls_per_row=3)).rows[0].image_urls


def test_a_row_never_holds_more_urls_than_a_product_can() -> None:
    urls = ",".join(f"https://img.example.com/{n}.jpg" for n in range(rules.MAX_IMAGES + 1))
    data = csv_bytes([HEADER, ["U-1", "Urls", urls, "", ""]])

    problem = the_problem(data, ImportLimits(max_urls_per_row=100))

    most = rules.MAX_IMAGES
    assert problem.message == f"has {most + 1} URLs; at most {most} are allowed"


def test_a_long_bad_url_is_shown_shortened() -> None:
    url = "ftp://img.example.com/" + "a" * 200

    message = the_problem(csv_bytes([HEADER, ["U-1", "Urls", url, "", ""]])).message

    assert message == f"URL 1 ({url[:80]}...) must be an absolute http or https URL"


# -- limits and the header -----------------------------------------------------------------
def test_too_many_rows_stops_reading_as_soon_as_it_is_known() -> None:
    limits = ImportLimits(max_rows=2)
    reader = CsvImportReader(limits)
    reader.feed(csv_bytes([HEADER, LAMP, CHAIR]))

    with pytest.raises(CsvTooManyRows) as raised:
        reader.feed(csv_bytes([["X-1", "One too many", "", "", ""]]))

    assert raised.value.problems == [
        CsvProblem(4, None, "the file has more than 2 rows after the header")
    ]
    with pytest.raises(CsvTooManyRows):
        reader.feed(b"more of the upload")


def test_the_row_limit_counts_rows_not_trailing_blank_lines() -> None:
    data = csv_bytes([HEADER, LAMP, CHAIR, ["", "", "", "", ""]]) + b"\r\n\r\n"

    assert len(read_import([data], ImportLimits(max_rows=2)).rows) == 2


def test_the_limit_problem_is_listed_even_when_the_list_is_full() -> None:
    rows = [[f"S-{n}", "", "", "", ""] for n in range(4)]

    with pytest.raises(CsvTooManyRows) as raised:
        read_import([csv_bytes([HEADER, *rows])], ImportLimits(max_rows=3, max_problems=2))

    assert raised.value.problems == [
        CsvProblem(2, NAME, "must not be empty"),
        CsvProblem(5, None, "the file has more than 3 rows after the header"),
    ]
    assert raised.value.total == 4


def test_a_missing_required_column_stops_at_the_header() -> None:
    reader = CsvImportReader()

    with pytest.raises(CsvUnreadable) as raised:
        reader.feed(csv_bytes([[NAME, "price", "Colour"]]))

    assert raised.value.problems == [
        CsvProblem(1, SKU, "is a required column, missing in the header"),
        CsvProblem(1, URLS, "is a required column, missing in the header"),
    ]


def test_a_header_written_with_semicolons_says_so() -> None:
    problem = problems_of(b"Serial Number;Product Name;Input Image URLs\r\nA;B;\r\n")[0]

    assert problem.message.endswith("; columns must be separated by commas")


def test_a_column_named_twice_is_a_problem() -> None:
    data = csv_bytes([[*HEADER, " price", "Notes", "notes"]])

    assert problems_of(data) == [
        CsvProblem(1, "price", "is in the header twice (columns 4 and 6)"),
        CsvProblem(1, "notes", "is in the header twice (columns 7 and 8)"),
    ]


def test_unnamed_columns_are_kept() -> None:
    parsed = read_import([csv_bytes([[*HEADER, "", ""], [*LAMP, "x", ""]])])

    assert parsed.rows[0].cells == (*LAMP, "x", "")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", CsvProblem(1, None, "the file is empty; its first row must name the columns")),
        (b"\xef\xbb\xbf", CsvProblem(1, None, "the file is empty")),
        (csv_bytes([HEADER]), CsvProblem(2, None, "the file has no rows after the header")),
        (csv_bytes([HEADER, ["", "", "", "", ""]]), CsvProblem(2, None, "the file has no rows")),
    ],
)
def test_a_file_without_rows_is_a_problem(data: bytes, problem: CsvProblem) -> None:
    found = the_problem(data)

    assert (found.row, found.column) == (problem.row, problem.column)
    assert found.message.startswith(problem.message)


# -- files that are not CSV text -------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "row", "message"),
    [
        (
            csv_bytes([HEADER, LAMP]) + "C-1,Café,,,\r\n".encode("latin-1"),
            3,
            "is not UTF-8 text (byte 0xe9); save the file as CSV UTF-8",
        ),
        (
            csv_bytes([HEADER, LAMP]) + b"C-1,Caf\xc3",
            3,
            "is not UTF-8 text (byte 0xc3); save the file as CSV UTF-8",
        ),
        (",".join(HEADER).encode("utf-16"), 1, "is not UTF-8 text (byte 0xff)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, "is not UTF-8 text (byte 0x89)"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", 1, "contains NUL bytes"),
        (csv_bytes([HEADER, LAMP]) + b"C-1,Chair\x00\x00", 3, "contains NUL bytes"),
        (csv_bytes([HEADER, LAMP]) + b'C-1,"Chair,,,\r\n', 3, "has a quoted cell that is never"),
    ],
)
def test_a_file_that_is_not_csv_text_is_unreadable_at_its_row(
    data: bytes, row: int, message: str
) -> None:
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        with pytest.raises(CsvUnreadable) as raised:
            read_import(chunks)

        [problem] = raised.value.problems
        assert (problem.row, problem.column) == (row, None)
        assert problem.message.startswith(message)


def test_a_line_that_never_ends_is_refused_before_it_fills_memory() -> None:
    reader = CsvImportReader()
    reader.feed(csv_bytes([HEADER]))

    with pytest.raises(CsvUnreadable) as raised:
        feed_all(reader, [b"x" * 65_536] * (MAX_RECORD_CHARS // 65_536 + 1))

    assert raised.value.problems == [
        CsvProblem(2, None, f"has a line longer than {MAX_RECORD_CHARS} characters")
    ]


def test_a_quote_left_open_is_refused_before_it_fills_memory() -> None:
    reader = CsvImportReader()
    reader.feed(csv_bytes([HEADER, LAMP]) + b'C-1,"Chair')

    with pytest.raises(CsvUnreadable) as raised:
        feed_all(reader, [(b"x" * 999 + b"\n") * 64] * (MAX_RECORD_CHARS // 64_000 + 1))

    [problem] = raised.value.problems
    assert problem.row == 3
    assert "is a quote left open?" in problem.message


class CountingLines:
    """Counts the characters csv parses, to tell a linear reader from a quadratic one."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.chars += len(line)
        return line


def test_a_long_cell_in_tiny_chunks_is_not_parsed_again_for_every_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: list[CountingLines] = []
    reader_of = csv.reader

    def counting_reader(lines: Iterator[str]) -> Iterator[list[str]]:
        counted.append(CountingLines(lines))
        return reader_of(counted[-1])

    monkeypatch.setattr(csv, "reader", counting_reader)
    data = csv_bytes([[*HEADER, EXTRA], [*CHAIR, "x\n" * 10_000]])

    [row] = read_import(chunked(data, [2])).rows

    assert len(row.cells[-1]) == 20_000
    assert counted[0].chars < 3 * len(data)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from([b"", csv_bytes([HEADER]), csv_bytes([HEADER, LAMP])]),
    garbage=st.binary(max_size=200) | st.text(CHARS, max_size=100).map(str.encode),
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4),
)
def test_any_bytes_are_rows_or_csv_invalid_never_another_error(
    prefix: bytes, garbage: bytes, sizes: list[int]
) -> None:
    outcome = read_or_refuse(chunked(prefix + garbage, sizes))

    if isinstance(outcome, CsvInvalid):
        assert 1 <= len(outcome.problems) <= outcome.total
    else:
        assert outcome.rows


# -- the error and the reader's life -------------------------------------------------------
def test_csv_problems_are_invalid_input_with_stable_codes() -> None:
    assert issubclass(CsvInvalid, InvalidInput)
    assert (CsvInvalid.code, CsvUnreadable.code, CsvTooManyRows.code) == (
        "invalid_csv",
        "unreadable_csv",
        "too_many_rows",
    )


def test_a_failed_reader_raises_the_same_error_again() -> None:
    reader = CsvImportReader()
    with pytest.raises(CsvUnreadable) as first:
        reader.feed(b"\xff")

    with pytest.raises(CsvUnreadable) as again:
        reader.finish()

    assert again.value is first.value


def test_a_finished_reader_takes_no_more_bytes() -> None:
    reader = CsvImportReader()
    reader.feed(csv_bytes([HEADER, LAMP]))
    reader.finish()

    with pytest.raises(RuntimeError):
        reader.feed(b"")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ImportLimits(max_problems=0)

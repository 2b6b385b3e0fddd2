"""Large AVIF images as grids of tiles, so that the encoder never holds the whole image.

libvips' AVIF saver hands the whole image to one AV1 encode, whose memory grows with the
pixels (docs/performance.md); and one AV1 frame cannot exceed 35.6 MP at AV1's
highest level. HEIF's grid derivation (ISO/IEC 23008-12, 6.6.2.3; MIAF, 7.3.11.4) is the
standard way out, the one libavif's `--grid` and every HEIC camera use: the file holds
equal tiles, each its own AV1 image, and a `grid` item that says how to lay them out and
where to crop the right and bottom edges.

`encode_grid` computes the image one strip of tiles at a time, encodes each tile with
libvips (same quality and effort as a single image), takes each tile file apart
(`_read_tile`) and writes the tiles' AV1 data into one file with a grid for the colour and,
when the image has an alpha band, a grid for the alpha (`_write_grid`). Properties common
to the tiles (`av1C`, `ispe`, `pixi`, `colr`, `auxC`) are written once and shared.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyvips

# Larger images are written as grids: the encoder's memory follows the pixels it is handed,
# and smaller tiles cost less of it and no more CPU or bytes (docs/performance.md).
GRID_ABOVE_PIXELS = 2048 * 2048
TILE = 512
_MAX_ITEMS = 256  # libheif's default security limit on the items of one file
# MIAF: a grid's tiles are at least 64x64 (and "should" be multiples of 64, which would
# pad a 2049-pixel side to 2240: Chromium and libavif take any size)
_MIN_TILE = 64
_BLOCK = 8  # AV1 codes 8x8 blocks at the least: a frame of another size is padded anyway
_ALPHA_URN = b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha"


class GridError(ValueError):
    """A tile file is not what libvips' AVIF saver is known to write."""


@dataclass(frozen=True, slots=True)
class _Property:
    box: bytes  # the whole property box, header included
    essential: bool


@dataclass(frozen=True, slots=True)
class _Image:
    """One coded image item of a tile file: its AV1 data and its properties."""

    data: bytes
    properties: tuple[_Property, ...]


@dataclass(frozen=True, slots=True)
class _Tile:
    colour: _Image
    alpha: _Image | None


def grid_tile_size(width: int, height: int, *, alpha: bool) -> tuple[int, int] | None:
    """The tile size for a `width` x `height` image, or None when it is written whole: it
    has at most `GRID_ABOVE_PIXELS`, or a side too small for MIAF's 64-pixel tiles.

    Tiles are at most `TILE` pixels a side, or larger where that many would pass libheif's
    limit on items in a file (an alpha grid doubles them); each side is then split into
    that many equal tiles, rounded up to AV1's 8-pixel blocks, so that the padding the grid
    crops away stays under 8 pixels a tile (512-pixel tiles on a 2049-pixel side would
    encode a fifth more pixels than the image has). Multiples of 8 are even: 4:2:0 chroma
    never straddles two tiles."""
    if width * height <= GRID_ABOVE_PIXELS:
        return None
    most = (_MAX_ITEMS - 2) // 2 if alpha else _MAX_ITEMS - 1  # the grid items count too
    side = TILE
    while math.ceil(width / side) * math.ceil(height / side) > most:
        side += _MIN_TILE
    tile_width, tile_height = _balanced(width, side), _balanced(height, side)
    if min(tile_width, tile_height) < _MIN_TILE:
        return None
    return tile_width, tile_height


def _balanced(size: int, side: int) -> int:
    """The length of the fewest equal tiles of at most `side` that cover `size`, in 8s."""
    count = math.ceil(size / side)
    return min(side, -(-math.ceil(size / count) // _BLOCK) * _BLOCK)


def encode_grid(image: pyvips.Image, tile_size: tuple[int, int], **save: object) -> bytes:
    """`image` as an AVIF grid of `tile_size` tiles, each saved by `heifsave_buffer(**save)`.

    The image is computed one strip of tiles at a time; the last column and row are padded
    by copying their edge pixels, and the grid crops them away again. MIAF allows a 4:2:0
    grid only an even width and height, so the tiles of an odd-sized image keep full chroma."""
    if image.width % 2 or image.height % 2:
        save = {**save, "subsample_mode": "off"}
    tile_width, tile_height = tile_size
    columns = math.ceil(image.width / tile_width)
    rows = math.ceil(image.height / tile_height)
    tiles: list[_Tile] = []
    for row in range(rows):
        top = row * tile_height
        strip = image.crop(0, top, image.width, min(tile_height, image.height - top))
        if strip.width < columns * tile_width or strip.height < tile_height:
            strip = strip.embed(0, 0, columns * tile_width, tile_height, extend="copy")
        strip = strip.copy_memory()  # computed once, then cut into tiles
        for column in range(columns):
            tile = strip.crop(column * tile_width, 0, tile_width, tile_height)
            tiles.append(_read_tile(bytes(tile.heifsave_buffer(**save))))
        del strip
    return _write_grid(tiles, image.width, image.height, columns, rows)


# Reading one tile file -------------------------------------------------------------------


def _read_tile(data: bytes) -> _Tile:
    """The primary image of an AVIF file and its alpha image, if it has one."""
    top = dict(_boxes(data, 0, len(data)))
    if b"meta" not in top:
        raise GridError("the tile file has no meta box")
    start, end = top[b"meta"]
    meta = dict(_boxes(data, start + 4, end))  # meta is a full box
    for kind in (b"pitm", b"iinf", b"iloc", b"iprp"):
        if kind not in meta:
            raise GridError(f"the tile file has no {kind.decode()} box")
    primary = _read_pitm(data, *meta[b"pitm"])
    types = _read_iinf(data, *meta[b"iinf"])
    locations = _read_iloc(data, *meta[b"iloc"], idat=meta.get(b"idat"))
    properties = _read_iprp(data, *meta[b"iprp"])
    references = _read_iref(data, *meta[b"iref"]) if b"iref" in meta else []
    if types.get(primary) != b"av01":
        raise GridError("the tile file's primary image is not an AV1 image")

    def image(item: int) -> _Image:
        return _Image(locations[item], tuple(properties.get(item, ())))

    alpha = None
    for kind, source, targets in references:
        is_alpha = any(_ALPHA_URN in p.box for p in properties.get(source, ()))
        if kind == b"auxl" and primary in targets and types.get(source) == b"av01" and is_alpha:
            alpha = image(source)
    return _Tile(image(primary), alpha)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, tuple[int, int]]]:
    """(type, (payload start, box end)) of each box in `data[start:end]`."""
    for kind, _, payload in _boxes_from(data, start, end):
        yield kind, payload


def _boxes_from(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, tuple[int, int]]]:
    """(type, box start, (payload start, box end)) of each box in `data[start:end]`."""
    while start < end:
        if end - start < 8:
            raise GridError("a box is cut short")
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, start + 8)
            header = 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            raise GridError(f"the {kind!r} box has a wrong size")
        yield kind, start, (start + header, start + size)
        start += size


def _read_pitm(data: bytes, start: int, end: int) -> int:
    version = data[start]
    return int(struct.unpack_from(">H" if version == 0 else ">I", data, start + 4)[0])


def _read_iinf(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """Each item's type."""
    version = data[start]
    offset = start + (6 if version == 0 else 8)
    types = {}
    for kind, (entry, _) in _boxes(data, offset, end):
        if kind != b"infe":
            continue
        entry_version = data[entry]
        if entry_version == 2:
            item, item_type = struct.unpack_from(">H2x4s", data, entry + 4)
        elif entry_version == 3:
            item, item_type = struct.unpack_from(">I2x4s", data, entry + 4)
        else:
            raise GridError(f"item info version {entry_version} is not supported")
        types[item] = item_type
    return types


def _read_iloc(
    data: bytes, start: int, end: int, *, idat: tuple[int, int] | None
) -> dict[int, bytes]:
    """Each item's data, its extents put together."""
    version = data[start]
    sizes = data[start + 4 : start + 6]
    offset_size, length_size = sizes[0] >> 4, sizes[0] & 15
    base_offset_size, index_size = sizes[1] >> 4, sizes[1] & 15 if version in (1, 2) else 0
    position = start + 6

    def read(size: int) -> int:
        nonlocal position
        value = int.from_bytes(data[position : position + size], "big")
        position += size
        return value

    count = read(2 if version < 2 else 4)
    located = {}
    for _ in range(count):
        item = read(2 if version < 2 else 4)
        method = read(2) & 15 if version in (1, 2) else 0
        read(2)  # data_reference_index
        base = read(base_offset_size)
        parts = []
        for _ in range(read(2)):
            read(index_size)
            extent_offset, extent_length = read(offset_size), read(length_size)
            if method == 0:
                first = base + extent_offset
            elif method == 1 and idat is not None:
                first = idat[0] + base + extent_offset
            else:
                raise GridError(f"item {item}'s data is not in the file or its idat")
            if extent_length == 0 or first + extent_length > len(data):
                raise GridError(f"item {item}'s data runs past the file")
            parts.append(data[first : first + extent_length])
        located[item] = b"".join(parts)
    if position > end:
        raise GridError("the iloc box is cut short")
    return located


def _read_iprp(data: bytes, start: int, end: int) -> dict[int, list[_Property]]:
    """Each item's properties, in the order of its associations."""
    children = dict(_boxes(data, start, end))
    if b"ipco" not in children or b"ipma" not in children:
        raise GridError("the tile file has no ipco or ipma box")
    table = [data[box:last] for _, box, (_, last) in _boxes_from(data, *children[b"ipco"])]
    first, _ = children[b"ipma"]
    version, flags = data[first], int.from_bytes(data[first + 1 : first + 4], "big")
    position = first + 4
    (count,) = struct.unpack_from(">I", data, position)
    position += 4
    associated: dict[int, list[_Property]] = {}
    for _ in range(count):
        if version < 1:
            (item,) = struct.unpack_from(">H", data, position)
            position += 2
        else:
            (item,) = struct.unpack_from(">I", data, position)
            position += 4
        entries = data[position]
        position += 1
        for _ in range(entries):
            if flags & 1:
                (value,) = struct.unpack_from(">H", data, position)
                position += 2
                essential, index = bool(value & 0x8000), value & 0x7FFF
            else:
                value = data[position]
                position += 1
                essential, index = bool(value & 0x80), value & 0x7F
            if index == 0:
                continue
            if index > len(table):
                raise GridError(f"item {item} names property {index}, which is not there")
            associated.setdefault(item, []).append(_Property(table[index - 1], essential))
    return associated


def _read_iref(data: bytes, start: int, end: int) -> list[tuple[bytes, int, list[int]]]:
    """(reference type, from item, to items) of each reference."""
    version = data[start]
    id_format, id_size = (">H", 2) if version == 0 else (">I", 4)
    references = []
    for kind, (first, _last) in _boxes(data, start + 4, end):
        (source,) = struct.unpack_from(id_format, data, first)
        (count,) = struct.unpack_from(">H", data, first + id_size)
        targets = [
            struct.unpack_from(id_format, data, first + id_size + 2 + i * id_size)[0]
            for i in range(count)
        ]
        references.append((kind, source, targets))
    return references


# Writing the grid file -------------------------------------------------------------------


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", version << 24 | flags), *payload)


@dataclass
class _Item:
    id: int
    type: bytes
    hidden: bool
    properties: list[_Property]
    data: bytes
    in_idat: bool  # a grid's few bytes go in the meta box's idat, the tiles' in mdat


@dataclass
class _Layout:
    items: list[_Item] = field(default_factory=list)

    def add(
        self, kind: bytes, properties: Sequence[_Property], data: bytes,
        *, hidden: bool = False, in_idat: bool = False,
    ) -> int:  # fmt: skip
        item = _Item(len(self.items) + 1, kind, hidden, list(properties), data, in_idat)
        self.items.append(item)
        return item.id


def _write_grid(tiles: Sequence[_Tile], width: int, height: int, columns: int, rows: int) -> bytes:
    """An AVIF file whose primary item is the grid of `tiles` (row by row), cropped to
    `width` x `height`; with an alpha grid when the tiles have alpha."""
    if not tiles:
        raise GridError("a grid needs tiles")
    has_alpha = tiles[0].alpha is not None
    if any((tile.alpha is not None) != has_alpha for tile in tiles):
        raise GridError("some tiles have alpha and others have none")
    size = _full_box(b"ispe", 0, 0, struct.pack(">II", width, height))
    layout = _Layout()
    colour_grid = layout.add(
        b"grid", _grid_properties(tiles[0].colour, size), _grid_data(width, height, columns, rows),
        in_idat=True,
    )  # fmt: skip
    alpha_grid = None
    if has_alpha:
        alpha = tiles[0].alpha
        assert alpha is not None
        alpha_grid = layout.add(
            b"grid", _grid_properties(alpha, size), _grid_data(width, height, columns, rows),
            in_idat=True,
        )  # fmt: skip
    colour_tiles = [
        layout.add(b"av01", tile.colour.properties, tile.colour.data, hidden=True) for tile in tiles
    ]
    alpha_tiles = [
        layout.add(b"av01", tile.alpha.properties, tile.alpha.data, hidden=True)
        for tile in tiles
        if tile.alpha is not None
    ]
    references = [(b"dimg", colour_grid, colour_tiles)]
    if alpha_grid is not None:
        references += [(b"dimg", alpha_grid, alpha_tiles), (b"auxl", alpha_grid, [colour_grid])]
    ftyp = _box(b"ftyp", b"avif", struct.pack(">I", 0), b"avif", b"mif1", b"miaf")
    # The iloc offsets point past the meta box, whose size does not depend on them.
    meta = _meta(layout, colour_grid, references, mdat_start=0)
    mdat_start = len(ftyp) + len(meta) + 8
    meta = _meta(layout, colour_grid, references, mdat_start=mdat_start)
    mdat = b"".join(item.data for item in layout.items if not item.in_idat)
    if mdat_start + len(mdat) >= 2**32:
        raise GridError("the grid is too large for 32-bit offsets")
    return ftyp + meta + _box(b"mdat", mdat)


def _grid_properties(tile: _Image, size: bytes) -> list[_Property]:
    """A grid's properties: its tiles' own (colour, pixel format, alpha), but its own size
    and no AV1 configuration (the grid is not coded)."""
    kept = [p for p in tile.properties if p.box[4:8] not in (b"av1C", b"ispe")]
    return [_Property(size, False), *kept]


def _grid_data(width: int, height: int, columns: int, rows: int) -> bytes:
    """ImageGrid: version 0, 16- or 32-bit output sizes, rows and columns minus one."""
    if columns > 256 or rows > 256:  # not reached: _MAX_ITEMS keeps tiles fewer
        raise GridError(f"a grid has at most 256x256 tiles, not {columns}x{rows}")
    wide = width > 0xFFFF or height > 0xFFFF
    sizes = struct.pack(">II" if wide else ">HH", width, height)
    return struct.pack(">BBBB", 0, int(wide), rows - 1, columns - 1) + sizes


def _meta(
    layout: _Layout, primary: int, references: list[tuple[bytes, int, list[int]]],
    *, mdat_start: int,
) -> bytes:  # fmt: skip
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"pict"), b"\0")
    pitm = _full_box(b"pitm", 0, 0, struct.pack(">H", primary))
    infos = [
        _full_box(b"infe", 2, int(item.hidden), struct.pack(">HH4s", item.id, 0, item.type), b"\0")
        for item in layout.items
    ]
    iinf = _full_box(b"iinf", 0, 0, struct.pack(">H", len(infos)), *infos)
    iloc_entries, idat, mdat_offset = [], b"", mdat_start
    for item in layout.items:
        if item.in_idat:
            method, offset = 1, len(idat)
            idat += item.data
        else:
            method, offset = 0, mdat_offset
            mdat_offset += len(item.data)
        iloc_entries.append(struct.pack(">HHHHII", item.id, method, 0, 1, offset, len(item.data)))
    # version 1: construction methods; 4-byte offsets and lengths, no base offset or index
    iloc = _full_box(b"iloc", 1, 0, bytes([0x44, 0x00]), struct.pack(">H", len(iloc_entries)),
                     *iloc_entries)  # fmt: skip
    iref = _full_box(b"iref", 0, 0, *(
        _box(kind, struct.pack(">HH", source, len(targets)),
             *(struct.pack(">H", target) for target in targets))
        for kind, source, targets in references
    ))  # fmt: skip
    idat_box = _box(b"idat", idat)
    return _full_box(b"meta", 0, 0, hdlr, pitm, iloc, iinf, iref, _iprp(layout), idat_box)


def _iprp(layout: _Layout) -> bytes:
    """The properties, each distinct box written once, and each item's associations."""
    table: dict[bytes, int] = {}
    for item in layout.items:
        for prop in item.properties:
            table.setdefault(prop.box, len(table) + 1)
    wide = len(table) > 127
    entries = []
    for item in layout.items:
        associations = b"".join(
            struct.pack(">H", table[p.box] | (0x8000 if p.essential else 0))
            if wide
            else bytes([table[p.box] | (0x80 if p.essential else 0)])
            for p in item.properties
        )
        entries.append(struct.pack(">HB", item.id, len(item.properties)) + associations)
    ipco = _box(b"ipco", *table)
    ipma = _full_box(b"ipma", 0, int(wide), struct.pack(">I", len(entries)), *entries)
    return _box(b"iprp", ipco, ipma)

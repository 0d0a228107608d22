"""C2SP tlog-tiles: the static resources a log is read through, as paths and bytes. Pure: no I/O.

A tile at level L, index N holds up to 256 consecutive Merkle Tree Hashes, each over ``256**L`` leaves:
``MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])``. Level 0 holds leaf hashes. A tile of fewer than
256 hashes is partial, named with ``.p/<W>``. An entry bundle holds the entries behind a level-0 tile, each
prefixed by its length as a big-endian uint16. Index N is written as 3-digit path elements, all but the last
prefixed with ``x`` (1234067 -> ``x001/x234/067``). See https://c2sp.org/tlog-tiles.

The ledger keeps leaf hashes and every 8th level of perfect nodes (store.nodes), which is exactly what the
tiles need: a tile's hashes are stored nodes at level 8L, read as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from lineage_ledger.errors import InputError

__all__ = [
    "MAX_BUNDLE_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "decode_bundle",
    "encode_bundle",
    "parse_tile_path",
    "split_hashes",
    "tiles_for_size",
]

TILE_HEIGHT: Final = 8
"""Levels of the tree per tile; tile level L holds tree level 8L."""
TILE_WIDTH: Final = 1 << TILE_HEIGHT
"""Hashes in a full tile (and entries in a full bundle)."""
MAX_BUNDLE_ENTRY_BYTES: Final = 0xFFFF
"""The longest entry a bundle's uint16 length prefix can carry."""
_MAX_LEVEL: Final = 63
_HASH: Final = 32
_ELEMENT: Final = re.compile(r"^(?:0|[1-9][0-9]*)$")
_INDEX_PART: Final = re.compile(r"^[0-9]{3}$")


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile (``level`` 0..63) or, with ``level`` None, one entry bundle; ``width`` 1..256."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if self.level is not None and not 0 <= self.level <= _MAX_LEVEL:
            raise InputError("tile.level", f"must be 0 to {_MAX_LEVEL}, got {self.level}")
        if self.index < 0:
            raise InputError("tile.index", f"must be >= 0, got {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise InputError("tile.width", f"must be 1 to {TILE_WIDTH}, got {self.width}")

    @property
    def partial(self) -> bool:
        """True for a tile of fewer than 256 hashes (or entries)."""
        return self.width < TILE_WIDTH

    @property
    def level_of_hashes(self) -> int:
        """The tree level its hashes sit at (entry bundles: 0, the leaves they hash to)."""
        return TILE_HEIGHT * (self.level or 0)

    @property
    def first(self) -> int:
        """Index, at ``level_of_hashes``, of the tile's first hash (of a bundle: the first entry's log index)."""
        return self.index * TILE_WIDTH

    def path(self) -> str:
        """The resource path under the log's prefix: ``tile/0/x001/234.p/7``, ``tile/entries/000``."""
        digits = f"{self.index:03d}"
        digits = "0" * (-len(digits) % 3) + digits
        parts = [digits[i : i + 3] for i in range(0, len(digits), 3)]
        name = "/".join([*("x" + p for p in parts[:-1]), parts[-1]])
        level = "entries" if self.level is None else str(self.level)
        return f"tile/{level}/{name}" + (f".p/{self.width}" if self.partial else "")


def parse_tile_path(path: str) -> Tile:
    """The tile a resource path names (``tile/...``, without the log's prefix); InputError naming what is
    wrong for anything the spec does not allow (leading zeros, a missing ``x``, a width of 0 or 256 ...)."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise InputError("path", f"{path!r} is not tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]")
    level: int | None
    if parts[1] == "entries":
        level = None
    elif _ELEMENT.match(parts[1]) and int(parts[1]) <= _MAX_LEVEL:
        level = int(parts[1])
    else:
        raise InputError("path", f"tile level {parts[1]!r} is not 0 to {_MAX_LEVEL} without leading zeros")
    rest = parts[2:]
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not _ELEMENT.match(rest[-1]) or not 1 <= int(rest[-1]) < TILE_WIDTH:
            raise InputError("path", f"partial width {rest[-1]!r} is not 1 to 255 without leading zeros")
        width = int(rest[-1])
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    *upper, last = rest
    if not all(p.startswith("x") and _INDEX_PART.match(p[1:]) for p in upper) or not _INDEX_PART.match(last):
        raise InputError("path", f"tile index {'/'.join(rest)!r} is not 3-digit elements, all but the last x-prefixed")
    index = int("".join([*(p[1:] for p in upper), last]))
    tile = Tile(level, index, width)
    if tile.path() != path:  # e.g. x000/001: a non-canonical spelling of index 1
        raise InputError("path", f"{path!r} is not the canonical path of its tile, {tile.path()!r}")
    return tile


def tiles_for_size(size: int) -> list[Tile]:
    """Every hash tile a tree of ``size`` leaves is read through: the full ones, then each level's partial one.

    For 70,000 leaves: 273 full and one partial (width 112) at level 0, one full and one partial (17) at
    level 1, one partial (1) at level 2, as the spec's example says."""
    out: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * level) >= 1:
        hashes = size >> (TILE_HEIGHT * level)  # perfect nodes at tree level 8L
        out.extend(Tile(level, n) for n in range(hashes // TILE_WIDTH))
        if hashes % TILE_WIDTH:
            out.append(Tile(level, hashes // TILE_WIDTH, hashes % TILE_WIDTH))
        level += 1
    return out


def encode_bundle(entries: list[bytes], *, first_index: int = 0) -> bytes:
    """Entries as an entry bundle: each prefixed by its length, big-endian uint16. InputError naming the log
    index of an entry longer than 65,535 bytes (the format cannot carry it)."""
    out = bytearray()
    for offset, entry in enumerate(entries):
        if len(entry) > MAX_BUNDLE_ENTRY_BYTES:
            raise InputError(
                f"entries[{first_index + offset}]",
                f"is {len(entry)} bytes; an entry bundle carries at most {MAX_BUNDLE_ENTRY_BYTES}",
            )
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes) -> list[bytes]:
    """The entries of an entry bundle; InputError if a length prefix runs past the end."""
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise InputError("bundle", f"a length prefix is cut off at byte {pos}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > len(data):
            raise InputError("bundle", f"entry {len(entries)} claims {length} bytes; {len(data) - pos} are left")
        entries.append(data[pos : pos + length])
        pos += length
    return entries


def split_hashes(data: bytes, tile: Tile) -> list[bytes]:
    """A hash tile's bytes as its hashes; InputError unless it holds exactly ``tile.width`` of them."""
    if len(data) != tile.width * _HASH:
        raise InputError("tile", f"{tile.path()} is {len(data)} bytes; it must be {tile.width * _HASH}")
    return [data[i : i + _HASH] for i in range(0, len(data), _HASH)]

"""C2SP tlog-tiles paths and entry bundles, against the examples the spec itself gives."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core.tiles import (
    TILE_WIDTH,
    Tile,
    decode_bundle,
    encode_bundle,
    parse_tile_path,
    split_hashes,
    tiles_for_size,
)
from lineage_ledger.errors import InputError


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 1234067), "tile/0/x001/x234/067"),  # the spec's own example of an index
        (Tile(0, 0), "tile/0/000"),
        (Tile(3, 999), "tile/3/999"),
        (Tile(1, 1000), "tile/1/x001/000"),
        (Tile(0, 5, 112), "tile/0/005.p/112"),
        (Tile(None, 273, 112), "tile/entries/273.p/112"),
        (Tile(None, 1234067), "tile/entries/x001/x234/067"),
        (Tile(63, 0, 1), "tile/63/000.p/1"),
    ],
)
def test_paths(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert parse_tile_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/00/000",  # a level with a leading zero
        "tile/64/000",  # past level 63
        "tile/0/1234",  # an element of four digits
        "tile/0/001/234",  # an upper element without its x
        "tile/0/x000/001",  # index 1 spelled with a needless leading element
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/data/000",
        "tiles/0/000",
        "tile/0",
        "tile/0/x01/000",
    ],
)
def test_paths_the_spec_does_not_allow_are_refused(path: str) -> None:
    with pytest.raises(InputError, match="path"):
        parse_tile_path(path)


@given(st.integers(0, 63) | st.none(), st.integers(0, 10**12), st.integers(1, TILE_WIDTH))
def test_every_tile_round_trips(level: int | None, index: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert parse_tile_path(tile.path()) == tile


def test_the_spec_example_tree_of_70000() -> None:
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t.level == 0]
    assert len([t for t in level0 if not t.partial]) == 273
    assert [t.width for t in level0 if t.partial] == [112]
    assert [(t.level, t.index, t.width) for t in tiles if t.level != 0] == [(1, 0, 256), (1, 1, 17), (2, 0, 1)]


def test_a_tree_of_256_has_a_partial_level_1_tile() -> None:
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(0) == []


def test_bundles() -> None:
    entries = [b"", b"a", b"x" * 300, b"y" * 0xFFFF]
    data = encode_bundle(entries)
    assert data == b"\x00\x00" + b"\x00\x01a" + b"\x01\x2c" + b"x" * 300 + b"\xff\xff" + b"y" * 0xFFFF
    assert decode_bundle(data) == entries
    with pytest.raises(InputError, match=r"entries\[12\]"):
        encode_bundle([b"z" * 0x10000], first_index=12)
    with pytest.raises(InputError, match="cut off"):
        decode_bundle(b"\x00")
    with pytest.raises(InputError, match="claims 5 bytes"):
        decode_bundle(b"\x00\x05abc")


def test_hash_tiles_must_hold_their_width() -> None:
    assert split_hashes(bytes(64), Tile(0, 0, 2)) == [bytes(32), bytes(32)]
    with pytest.raises(InputError, match="must be 64"):
        split_hashes(bytes(65), Tile(0, 0, 2))


def test_the_documented_bundle_vector() -> None:
    """docs/tiles.md's vector: two entries, each after its big-endian uint16 length; leaves as RFC 6962 says."""
    entries = [b'{"index":0}', '{"index":1,"x":"é"}'.encode()]
    by_hand = b"\x00\x0b" + entries[0] + b"\x00\x14" + entries[1]
    assert encode_bundle(entries) == by_hand
    doc = (Path(__file__).resolve().parents[2] / "docs" / "tiles.md").read_text("utf-8")
    hex_lines = re.findall(r"^    ((?:[0-9a-f]{4}) [0-9a-f]+)$", doc, flags=re.MULTILINE)
    assert bytes.fromhex("".join(line.replace(" ", "") for line in hex_lines)) == by_hand
    for entry in entries:
        assert hashlib.sha256(b"\x00" + entry).hexdigest() in doc

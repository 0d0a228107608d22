"""The log as C2SP tlog-tiles, read from a store: served by ``lineage serve`` and written by ``lineage publish``.

Only what the latest signed checkpoint covers is published: a tile or bundle reaching past its size is not
found, so a reader never sees an entry or a hash that no signature commits to yet. Every tile's bytes are
fixed once it exists (perfect nodes never change), so full and partial tiles alike can be cached for good.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lineage_ledger.core.tiles import TILE_WIDTH, Tile, encode_bundle, tiles_for_size
from lineage_ledger.errors import NotFoundError
from lineage_ledger.store.base import CheckpointRow, Store

__all__ = ["Published", "publish_tiles", "read_tile"]


def read_tile(store: Store, tile: Tile, size: int) -> bytes:
    """The bytes of ``tile`` in the tree of ``size`` leaves (a signed checkpoint's size). NotFoundError if the
    tile reaches past ``size``, as the spec's "empty tiles MUST NOT be served" and our "nothing unsigned" ask."""
    end = (tile.first + tile.width) << tile.level_of_hashes  # the leaves its last hash (or entry) covers
    if end > size:
        raise NotFoundError(f"{tile.path()} reaches leaf {end}, past the latest checkpoint's size {size}")
    if tile.level is None:
        return encode_bundle(
            [row.body for row in store.entries(tile.first, tile.first + tile.width)], first_index=tile.first
        )
    return b"".join(store.nodes(tile.level_of_hashes, tile.first, tile.width))


@dataclass(frozen=True, slots=True)
class Published:
    """What one ``publish_tiles`` run wrote."""

    size: int
    written: int
    """Tiles and bundles written (new full ones, and the partial ones of this size)."""
    kept: int
    """Full tiles and bundles already in the directory, left as they were (their bytes cannot change)."""


def publish_tiles(store: Store, directory: Path, checkpoint: CheckpointRow | None = None) -> Published:
    """Write the log as static tlog-tiles files under ``directory``: ``checkpoint``, ``tile/<L>/<N>[.p/<W>]``
    and ``tile/entries/<N>[.p/<W>]`` for the latest signed checkpoint (or ``checkpoint``).

    Run it again after new seals: full tiles already present are kept; the checkpoint is written last, so a
    reader never finds a checkpoint whose tiles are missing. Each file is written whole (a temporary file,
    then a rename). NotFoundError if the ledger has no signed checkpoint yet."""
    row = checkpoint or store.latest_checkpoint()
    if row is None:
        raise NotFoundError("the ledger has no signed checkpoint yet: seal it first")
    size = row.size
    written = kept = 0
    hash_tiles = tiles_for_size(size)
    bundles = [Tile(None, n) for n in range(size // TILE_WIDTH)]
    if size % TILE_WIDTH:
        bundles.append(Tile(None, size // TILE_WIDTH, size % TILE_WIDTH))
    for tile in [*hash_tiles, *bundles]:
        path = directory / tile.path()
        if not tile.partial and path.exists():
            kept += 1
            continue
        _write_whole(path, read_tile(store, tile, size))
        written += 1
    _write_whole(directory / "checkpoint", row.note.encode())
    return Published(size, written, kept)


def _write_whole(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # published: meant to be read by a web server
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

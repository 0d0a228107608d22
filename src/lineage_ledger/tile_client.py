"""Read a published log through C2SP tlog-tiles, trusting nothing but the log's verifier key.

The client knows only the spec and the key: it fetches ``<prefix>/checkpoint``, checks its signature, and
rebuilds every hash it needs (tree roots, inclusion and consistency proofs) from tiles, then checks each result
against the signed root, so a server (or CDN) that serves a wrong tile is caught, never believed. ``prefix``
may be ``http(s)://`` or ``file://`` (a directory ``lineage publish`` wrote). Standard library only, like the
offline verifier.
"""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lineage_ledger.core.merkle import (
    CompactRange,
    TiledNodeReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    range_root,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note
from lineage_ledger.core.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, decode_bundle, split_hashes, tiles_for_size
from lineage_ledger.errors import (
    InconsistencyError,
    InputError,
    NotFoundError,
    RootMismatchError,
    TransportError,
)

__all__ = ["SignedCheckpoint", "TileClient"]

Fetch = Callable[[str], bytes]
"""Fetch a resource path under the log's prefix (``checkpoint``, ``tile/0/000``); NotFoundError for a 404."""


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint whose signature by the log's key checked out, and its note as served."""

    checkpoint: Checkpoint
    note: str


def _http_fetch(prefix: str, timeout: float) -> Fetch:
    base = prefix.rstrip("/") + "/"

    def fetch(path: str) -> bytes:
        request = urllib.request.Request(base + path, headers={"Accept-Encoding": "gzip, identity"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - http(s) or file only
                data: bytes = answer.read()
                if answer.headers.get("Content-Encoding", "") == "gzip":
                    data = gzip.decompress(data)
                return data
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise NotFoundError(f"{base + path}: 404 Not Found") from e
            raise TransportError(f"{base + path}: HTTP {e.code} {e.reason}") from e
        except FileNotFoundError as e:
            raise NotFoundError(f"{base + path}: no such file") from e
        except (urllib.error.URLError, OSError) as e:
            raise TransportError(f"{base + path}: {e}") from e

    return fetch


class TileClient:
    """A verifying reader of one tiled log. Tiles are cached for the client's life (their bytes never change)."""

    def __init__(self, prefix: str, verifier: NoteVerifier, *, timeout: float = 10.0, fetch: Fetch | None = None):
        if fetch is None and not prefix.startswith(("http://", "https://", "file://")):
            raise InputError("log", f"{prefix!r} is not an http://, https:// or file:// URL")
        self.prefix = prefix
        self._verifier = verifier
        self._fetch = fetch or _http_fetch(prefix, timeout)
        self._tiles: dict[Tile, bytes] = {}

    def checkpoint(self) -> SignedCheckpoint:
        """The log's current checkpoint, its signature checked (SignatureError / InputError otherwise)."""
        note = self._fetch("checkpoint").decode("utf-8", errors="strict")
        text, _ = open_note(note, [self._verifier])
        return SignedCheckpoint(Checkpoint.from_text(text), note)

    # -- hashes from tiles ------------------------------------------------------------------------------

    def _tile(self, tile: Tile, *, keep: bool = True) -> bytes:
        data = self._tiles.get(tile)
        if data is None:
            data = self._fetch(tile.path())
            if keep:
                self._tiles[tile] = data
        return data

    def _covering(self, level: int | None, index: int, size: int) -> Tile:
        """The tile holding hash ``index`` of tile level ``level`` (None: the entry bundle of leaf ``index``)
        in the tree of ``size``: full if the tree completes it, else partial of the tree's width."""
        hashes = size >> (TILE_HEIGHT * (level or 0))
        n = index // TILE_WIDTH
        width = min(TILE_WIDTH, hashes - n * TILE_WIDTH)
        if width <= 0:
            raise NotFoundError(f"hash {index} of tile level {level} is not in the tree of size {size}")
        return Tile(level, n, width)

    def _reader(self, size: int) -> Callable[[int, int, int], Sequence[bytes]]:
        def read(level: int, start: int, count: int) -> list[bytes]:
            out: list[bytes] = []
            tile_level = level // TILE_HEIGHT
            pos = start
            while pos < start + count:
                tile = self._covering(tile_level, pos, size)
                hashes = split_hashes(self._tile(tile), tile)
                take = min(start + count, tile.first + tile.width) - pos
                out.extend(hashes[pos - tile.first : pos - tile.first + take])
                pos += take
            return out

        return read

    def nodes(self, size: int) -> TiledNodeReader:
        """A NodeGetter over the tree of ``size`` leaves, read from tiles (not yet checked: see root)."""
        return TiledNodeReader(self._reader(size), stride=TILE_HEIGHT)

    def root(self, size: int, expected: bytes | None = None) -> bytes:
        """The tree root of ``size`` leaves computed from tiles; RootMismatchError if ``expected`` differs."""
        root = range_root(0, size, self.nodes(size))
        if expected is not None and root != expected:
            raise RootMismatchError(f"tiles of the tree of size {size} do not hash to the signed root", expected, root)
        return root

    def audit(self, signed: Checkpoint, *, entries: bool = True) -> int:
        """Fetch every tile of ``signed``'s tree (and, with ``entries``, every entry bundle) and check them all:
        the leaf hashes hash to the signed root, each hash of a higher tile is the root of the full tile below
        it, and each entry hashes to its leaf. RootMismatchError naming the first tile that disagrees.
        Returns the number of entries checked. Tiles are streamed, not kept: memory stays one tile."""
        size = signed.size
        leaves = CompactRange()
        for n in range(-(-size // TILE_WIDTH)):
            tile = self._covering(0, n * TILE_WIDTH, size)
            hashes = split_hashes(self._tile(tile, keep=False), tile)
            if entries:
                self._check_bundle(Tile(None, n, tile.width), hashes)
            leaves.append_many(hashes)
        if leaves.root() != signed.root_hash:
            raise RootMismatchError(f"the leaf hashes of the tree of size {size}", signed.root_hash, leaves.root())
        for tile in tiles_for_size(size):
            if not tile.level:
                continue
            for i, expected in enumerate(split_hashes(self._tile(tile), tile)):
                child = Tile(tile.level - 1, tile.first + i)
                calculated = root_of(split_hashes(self._tile(child, keep=False), child))
                if calculated != expected:
                    raise RootMismatchError(f"hash {i} of {tile.path()} against {child.path()}", expected, calculated)
        return size if entries else 0

    def _check_bundle(self, bundle: Tile, hashes: list[bytes]) -> None:
        found = decode_bundle(self._tile(bundle, keep=False))
        if len(found) != bundle.width:
            raise InputError("bundle", f"{bundle.path()} holds {len(found)} entries, not {bundle.width}")
        for offset, (body, expected) in enumerate(zip(found, hashes, strict=True)):
            if leaf_hash(body) != expected:
                where = f"entry {bundle.first + offset} in {bundle.path()}"
                raise RootMismatchError(f"{where} does not hash to its leaf", expected, leaf_hash(body))

    def leaf_range(self, begin: int, end: int, size: int) -> tuple[list[bytes], list[bytes]]:
        """Leaf hashes and entries ``begin``..``end - 1`` of the tree of ``size``, read from level-0 tiles and
        entry bundles, each entry of every bundle read checked to hash to its leaf (RootMismatchError naming
        the first that does not). The leaf hashes are not yet checked against a root: fold them into a
        compact range for that. Tiles read here are not cached (a follower reads each once)."""
        if not 0 <= begin <= end <= size:
            raise InputError("range", f"{begin}..{end} is not a range of the tree of size {size}")
        leaves: list[bytes] = []
        bodies: list[bytes] = []
        pos = begin
        while pos < end:
            tile = self._covering(0, pos, size)
            hashes = split_hashes(self._tile(tile, keep=False), tile)
            bundle = Tile(None, tile.index, tile.width)
            found = decode_bundle(self._tile(bundle, keep=False))
            if len(found) != bundle.width:
                raise InputError("bundle", f"{bundle.path()} holds {len(found)} entries, not {bundle.width}")
            for at, (body, expected) in enumerate(zip(found, hashes, strict=True)):  # the whole bundle served
                if leaf_hash(body) != expected:
                    where = f"entry {tile.first + at} in {bundle.path()}"
                    raise RootMismatchError(f"{where} does not hash to its leaf", expected, leaf_hash(body))
            take = min(end, tile.first + tile.width) - pos
            leaves.extend(hashes[pos - tile.first : pos - tile.first + take])
            bodies.extend(found[pos - tile.first : pos - tile.first + take])
            pos += take
        return leaves, bodies

    # -- entries and proofs, each checked against a signed root ------------------------------------------

    def entry(self, index: int, signed: Checkpoint) -> tuple[bytes, list[bytes]]:
        """Entry ``index`` and its inclusion proof in ``signed``'s tree, verified against its root."""
        size = signed.size
        if not 0 <= index < size:
            raise NotFoundError(f"entry {index} is not in the tree of size {size}")
        bundle = self._covering(None, index, size)
        entries = decode_bundle(self._tile(bundle))
        if len(entries) != bundle.width:
            raise InputError("bundle", f"{bundle.path()} holds {len(entries)} entries, not {bundle.width}")
        body = entries[index - bundle.first]
        proof = inclusion_proof(index, size, self.nodes(size))
        verify_inclusion(leaf_hash(body), index, size, proof, signed.root_hash)
        return body, proof

    def consistency(self, old: Checkpoint, new: Checkpoint) -> list[bytes]:
        """The RFC 9162 consistency proof from ``old`` to ``new`` built from tiles, verified against both roots
        (InconsistencyError / ProofError if the log rewrote history between them)."""
        if old.size > new.size:
            raise InconsistencyError(f"the log shrank: it signed size {old.size}, now it signs {new.size}")
        if old.size == new.size:
            if old.root_hash != new.root_hash:
                raise InconsistencyError(
                    f"two signed roots for size {new.size}: {old.root_hash.hex()} and {new.root_hash.hex()} (a fork)"
                )
            return []
        if old.size == 0:
            return []
        proof = consistency_proof(old.size, new.size, self.nodes(new.size))
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        return proof

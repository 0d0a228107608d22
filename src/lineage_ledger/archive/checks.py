"""What ``lineage verify`` checks of the archive tier, each check on its own, composed by archive_problems.

* every ``archive`` and ``expire`` record in the log matches a stored row (and the other way round): the
  store's rows, which no signature covers, are what reads, deletions and skipped file checks go by;
* every recorded file not expired is present, and its SHA-256 is the one its signed record names (a flipped
  byte, a dropped row group, a file swapped or copied over another all change it);
* every such file holds exactly the indexes of its range, each entry's leaf hash equal to the log's where
  the log still has the entry, and each block's root equal to the root its seal commits to;
* no Parquet file under a location is left that no record names (a copy, or a file slipped in).

Once a range has expired, the entries before it cannot all be read again, so the full verification of the
entries (which replays every chain and verdict from index 0) cannot run; ``expired_tree_problems`` then checks
what still can be: the latest checkpoint's signature, and its root recomputed over every tier, the expired
ranges through the tree nodes and edge leaves kept hot for them.

Each problem names the index range it affects.
"""

from __future__ import annotations

import hashlib
import re

from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.archive.writer import check_file, sealed_blocks
from lineage_ledger.core.entry import ARCHIVE_SUBJECT, ArchiveChange, ArchiveEntry, decode_entry
from lineage_ledger.core.merkle import TiledNodeReader, range_root, root_of
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.log_keys import read_key_chain
from lineage_ledger.ledger.verification.report import Problem
from lineage_ledger.store.base import ArchiveRow, Store

__all__ = [
    "archive_problems",
    "expired_tree_problems",
    "expiry_problems",
    "file_problems",
    "record_problems",
    "stray_file_problems",
]

_NAME = re.compile(r"entries-([0-9]+)-([0-9]+)\.parquet$")


def _records(store: Store, action: str = "archive") -> list[tuple[int, ArchiveChange]]:
    out = []
    for row in store.subject_entries([ARCHIVE_SUBJECT]):
        entry = decode_entry(row.body)
        if isinstance(entry, ArchiveEntry) and entry.change.action == action:
            out.append((row.index, entry.change))
    return out


def record_problems(store: Store) -> list[Problem]:
    """Stored archived ranges against the signed records in the log."""
    problems: list[Problem] = []
    rows = {a.record: a for a in store.archives()}
    for index, change in _records(store):
        row = rows.pop(index, None)
        where = f"entries {change.first}..{change.last}"
        if row is None:
            problems.append(
                Problem("archive", f"{where}: the archive record at {index} has no stored range", change.first)
            )
        elif (row.first, row.last, row.file, row.sha256.hex()) != (
            change.first,
            change.last,
            change.file,
            change.sha256,
        ):
            problems.append(
                Problem("archive", f"{where}: the stored range differs from its signed record at {index}", change.first)
            )
    for row in rows.values():
        problems.append(
            Problem(
                "archive", f"entries {row.first}..{row.last}: a stored archived range no signed record names", row.first
            )
        )
    return problems + expiry_problems(store)


def expiry_problems(store: Store) -> list[Problem]:
    """Stored expiries against the signed ``expire`` records in the log, both ways."""
    problems: list[Problem] = []
    expiries = {e.record: e for e in store.expiries()}
    for index, change in _records(store, "expire"):
        expiry = expiries.pop(index, None)
        if expiry is None or (expiry.first, expiry.last, expiry.policy) != (change.first, change.last, change.policy):
            where = f"entries {change.first}..{change.last}"
            problems.append(
                Problem("archive", f"{where}: the expiry at {index} has no matching stored row", change.first)
            )
    for expiry in expiries.values():
        where = f"entries {expiry.first}..{expiry.last}"
        problems.append(Problem("archive", f"{where}: marked expired with no signed expiry", expiry.first))
    return problems


def file_problems(store: Store, archive: ArchiveRow, location: ArchiveLocation) -> list[Problem]:
    """One recorded file against its record and the log."""
    where = f"entries {archive.first}..{archive.last} ({archive.file})"
    try:
        data = location.read(archive.file)
    except LedgerError as e:
        return [Problem("archive", f"{where}: {e}", archive.first)]
    if hashlib.sha256(data).digest() != archive.sha256:
        return [Problem("archive", f"{where}: the file is not the one recorded (SHA-256 differs)", archive.first)]
    hot_store: Store = getattr(store, "hot", store)
    hot = {r.index: r.leaf for r in hot_store.entries(archive.first, archive.last + 1)}
    blocks = [b for b in sealed_blocks(store) if archive.first <= b.first and b.seal <= archive.last]
    try:
        rows = check_file(data, archive.first, archive.last, hot.get, blocks)
    except LedgerError as e:
        return [Problem("archive", f"{where}: {e}", archive.first)]
    for index, change in _records(store):
        if index == archive.record and change.root != root_of([r.leaf for r in rows]).hex():
            return [Problem("archive", f"{where}: the entries' root differs from the signed record", archive.first)]
    return []


def stray_file_problems(archives: list[ArchiveRow], location: ArchiveLocation) -> list[Problem]:
    """Parquet files under ``location`` that no archived range names."""
    named = {a.file for a in archives if a.location == location.url}
    problems = []
    for name in location.files():
        if name in named:
            continue
        m = _NAME.search(name)
        first = int(m.group(1)) if m else None
        span = f"entries {int(m.group(1))}..{int(m.group(2))}" if m else "no range"
        problems.append(Problem("archive", f"{name}: a file no archive record names (claims {span})", first))
    return problems


def archive_problems(store: Store) -> list[Problem]:
    """Every archive check, for the ledger in ``store``; [] when nothing is archived."""
    archives = store.archives()
    if not archives:
        return []
    expired = {e.first for e in store.expiries()}
    problems = record_problems(store)
    locations: dict[str, ArchiveLocation] = {}
    for archive in archives:
        location = locations.setdefault(archive.location, ArchiveLocation(archive.location))
        if archive.first not in expired:
            problems.extend(file_problems(store, archive, location))
    for location in locations.values():
        problems.extend(stray_file_problems(archives, location))
    return problems


def expired_tree_problems(store: Store, verifier: NoteVerifier | None = None) -> list[Problem]:
    """The latest checkpoint's signature (under ``verifier``, else the log key the ledger records for its
    size) and its root against the root recomputed from every tier."""
    row = store.latest_checkpoint()
    if row is None:
        return [Problem("checkpoint", "the ledger has no signed checkpoint")]
    try:
        key = verifier if verifier is not None else read_key_chain(store).verifier_for(row.size)
        text, _ = open_note(row.note, [key])
        checkpoint = Checkpoint.from_text(text)
        root = range_root(0, checkpoint.size, TiledNodeReader(store.nodes))
    except LedgerError as e:
        return [Problem("checkpoint", f"checkpoint {row.size}: {e}")]
    if root != checkpoint.root_hash:
        return [
            Problem(
                "root", f"checkpoint {row.size}: the tree over every tier has root {root.hex()}, not the signed one"
            )
        ]
    return []

"""Derived-index checks: the store's derived tables, which no signature covers, against the rows the
verified entries give. The links table the lineage queries start from, SQLite's subject index, the
revocation set, the envelope rows' first indexes and the stored subject-map nodes (ledger.stored_rows)."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger import stored_rows
from lineage_ledger.ledger.links import stored_below
from lineage_ledger.ledger.verification.report import MAX_PROBLEMS, Problem, VerifyReport
from lineage_ledger.store import open_store

__all__ = [
    "Derived",
    "IndexCheck",
    "Row",
    "Scan",
    "Stored",
    "check_stored_rows",
    "derived_problems",
    "links_below",
    "multiset",
    "revocation_problems",
    "row_hasher",
    "stored_indexes",
]


_HASH_MOD: Final = 1 << 256
_ROW_ENCODER: Final = msgspec.json.Encoder()

Row = tuple[Any, ...]
"""A row of a derived table: a link, or a (subject, index) pair of the subject index."""


@dataclass(frozen=True, slots=True)
class IndexCheck:
    """What the workers need to check the derived indexes: for the links and for the subject index, the
    index below which the store must hold every row (None: not checked), and this run's key for row_hasher."""

    links_below: int | None
    subjects_below: int | None
    key: bytes
    rollups_end: int | None = None
    """The end of the last day with stored rollups (None: none are): the chunks sum up the token events
    below it by day (verification.rollups)."""


def row_hasher(key: bytes) -> Callable[[Sequence[object]], int]:
    """One row's term of a multiset hash: a keyed BLAKE2b of its JSON, with a key drawn afresh for each
    verification. A plain sum of public hashes is open to a generalized-birthday search (Wagner) for rows
    whose hashes add up to those of the rows removed; under a key the tamperer never saw there is nothing
    to search against. The keyed state is set up once and copied for each row (the key block is hashed
    once, not once per row: a third of the cost of a row)."""
    keyed = hashlib.blake2b(digest_size=32, key=key)
    copy, encode, from_bytes = keyed.copy, _ROW_ENCODER.encode, int.from_bytes

    def row_hash(row: Sequence[object]) -> int:
        h = copy()
        h.update(encode(row))
        return from_bytes(h.digest(), "big")

    return row_hash


def multiset(rows: Sequence[Row], pos: int, below: int | None, check: IndexCheck | None) -> tuple[int, list[Row]]:
    """The multiset hash of the distinct ``rows`` whose log index (at ``pos``) is below ``below``, and the
    rows at or above it (nothing when the table is not checked)."""
    if check is None or below is None:
        return 0, []
    row_hash = row_hasher(check.key)
    total = 0
    above: list[Row] = []
    for row in set(rows):  # a data event naming an input twice gives one link
        if row[pos] < below:
            total += row_hash(row)
        else:
            above.append(row)
    return total % _HASH_MOD, above


@dataclass(slots=True)
class Stored:
    """A derived table as stored_indexes read it: per chunk, the multiset hash of its rows below the
    point; the rows at or above it; and the log's size once they were read (rows of entries appended
    while the verifier ran are not judged)."""

    sums: list[int]
    others: list[Row]
    size: int


class Derived:
    """A table the store derives from the entries and the queries read, which no signature covers, against
    the rows the entries give: the links (lineage.py answers "which tokens used this resource" from them)
    and SQLite's subject index (timelines and every lookup by subject). A row removed would silently drop
    a token from an incident's answer.

    Below ``below`` (where the store must hold every row of those entries: ledger.links.stored_below, the
    subject index's mark) the stored rows of each chunk must be exactly the derived ones, compared as a
    multiset hash (the sum of each row's keyed hash, row_hasher, modulo 2**256), so memory does not grow
    with the log. At or above it the store may hold some of them (the writer writes them later), so each
    stored row there must be one of the derived rows, kept as a set (a block or two of links, up to two
    runs of the subject index).
    """

    def __init__(self, kind: str, what: str, pos: int, below: int | None) -> None:
        self.kind = kind
        self.what = what
        self.pos = pos
        self.below = below
        self.starts: list[int] = []
        self.sums: list[int] = []
        self.above: set[Row] = set()

    def add(self, start: int, total: int, above: list[Row]) -> None:
        """A chunk's rows, as the chunk check summed them (see multiset)."""
        if self.below is None:
            return
        self.starts.append(start)
        self.sums.append(total)
        self.above.update(above)

    def check(self, stored: Stored | None, size: int) -> list[Problem]:
        """Problems with the stored rows, as stored_indexes read them for the same chunks."""
        below = self.below
        if below is None or stored is None or not self.starts:
            return []
        problems: list[Problem] = []
        for row in stored.others:
            idx = row[self.pos]
            if type(idx) is int and size <= idx < stored.size:
                continue  # an entry appended since the verification began: not judged
            if row not in self.above and len(problems) < MAX_PROBLEMS:
                problems.append(
                    Problem(
                        self.kind,
                        f"a stored {self.what} row of entry {idx} is not one the entry gives (forged)",
                        idx if type(idx) is int and 0 <= idx < size else None,
                    )
                )
        for k, (derived, found) in enumerate(zip(self.sums, stored.sums, strict=True)):
            if derived != found and len(problems) < MAX_PROBLEMS:
                start = self.starts[k]
                end = min(self.starts[k + 1] if k + 1 < len(self.starts) else size, below)
                problems.append(
                    Problem(
                        self.kind,
                        f"entries {start}..{end - 1}: the stored {self.what} rows are not those the entries give "
                        "(rows removed, added or changed)",
                        start,
                    )
                )
        return problems


@dataclass(slots=True)
class Scan:
    """The stored side of the Derived checks: each table read once, in a worker beside the chunks (or here
    after them)."""

    url: str
    starts: list[int]
    check: IndexCheck
    result: tuple[Stored | None, Stored | None] | None = None


def stored_indexes(url: str, starts: list[int], check: IndexCheck) -> tuple[Stored | None, Stored | None]:
    """The links and the subject index as stored (None for a table not checked)."""
    store = open_store(url, readonly=True)
    try:
        links = index = None
        if check.links_below is not None:
            links = _stored(store.link_rows(), 3, check.links_below, starts, check.key)
        kept = store.subject_index_rows() if check.subjects_below is not None else None
        if check.subjects_below is not None and kept is not None:
            index = _stored(kept[1], 1, check.subjects_below, starts, check.key)
        size = store.size()  # after the rows: every entry they name that exists is below it
        return (
            None if links is None else Stored(*links, size),
            None if index is None else Stored(*index, size),
        )
    finally:
        store.close()


def _stored(rows: Iterator[Row], pos: int, below: int, starts: list[int], key: bytes) -> tuple[list[int], list[Row]]:
    """Per chunk, the multiset hash of the rows below ``below``; and the other rows."""
    sums = [0] * len(starts)
    others: list[Row] = []
    row_hash = row_hasher(key)
    for row in rows:
        idx = row[pos]
        if type(idx) is int and 0 <= idx < below:
            sums[bisect_right(starts, idx) - 1] += row_hash(row)
        else:
            others.append(row)
    return [total % _HASH_MOD for total in sums], others


def revocation_problems(derived: dict[str, int], rows: list[tuple[str, int]], size: int, now: int) -> list[Problem]:
    """The stored revocation set against the one the token events give. ``size`` is the log the verifier
    read, ``now`` the log's size after the rows were read: rows of entries appended in between are not
    judged."""
    stored = {subject: idx for subject, idx in rows if not (type(idx) is int and size <= idx < now)}
    problems: list[Problem] = []
    for subject in sorted(derived.keys() | stored.keys(), key=lambda s: (derived.get(s, -1), str(s))):
        mine, theirs = derived.get(subject), stored.get(subject)
        if mine != theirs and len(problems) < MAX_PROBLEMS:
            said = "does not hold it" if theirs is None else f"says entry {theirs}"
            gave = "no entry revokes it" if mine is None else f"entry {mine} revokes it"
            problems.append(Problem("revocations", f"{subject}: the revocation set {said}; {gave}", mine))
    return problems


def derived_problems(
    store: Any,
    links: Derived,
    index: Derived,
    scanned: tuple[Stored | None, Stored | None] | None,
    revoked: dict[str, int],
    size: int,
) -> list[Problem]:
    """The links and the subject index as ``scanned`` (stored_indexes) against those the entries give, and
    the stored revocation set against ``revoked`` (Verdicts.revoked); ``size`` is the log the verifier read."""
    problems: list[Problem] = []
    try:
        if scanned is not None:
            stored_links, stored_index = scanned
            problems.extend(links.check(stored_links, size))
            problems.extend(index.check(stored_index, size))
        revocations = store.revocation_rows()
        problems.extend(revocation_problems(revoked, revocations, size, store.size()))
    except LedgerError as e:
        problems.append(Problem("derived_index", f"cannot read the derived indexes: {e}"))
    return problems


def check_stored_rows(store: Any, first_uses: dict[bytes, int], report: VerifyReport) -> None:
    """The envelope rows' first indexes and every stored subject-map node (ledger.stored_rows)."""
    try:
        found = stored_rows.envelope_row_problems(store.envelope_first_indexes(), first_uses)
        report.problems.extend(Problem("envelope", message, index) for message, index in found)
        found = stored_rows.map_node_row_problems(store.map_node_rows())
        report.problems.extend(Problem("map_node", message, index) for message, index in found)
    except LedgerError as e:
        report.problems.append(Problem("derived_index", f"cannot read the stored rows: {e}"))


def links_below(store: Any, checkpoint_size: int) -> int | None:
    """ledger.links.stored_below for the latest checkpoint, or None when the store cannot say (its seal is
    unreadable: a problem the entry checks report)."""
    try:
        return stored_below(store, checkpoint_size)
    except (LedgerError, ValueError, msgspec.DecodeError):
        return None

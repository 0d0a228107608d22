"""The store contract: what the ledger needs from any backend, and nothing more.

A store keeps rows; it never hashes, signs or judges. Every method either completes or raises StoreError
(ConflictError, NotFoundError) with nothing half-written. All ledger tables are append-only, enforced inside
the database itself. The contract tests in tests/store run unchanged against every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

__all__ = [
    "ArchiveRow",
    "BatchWrite",
    "ChainBreak",
    "CheckpointRow",
    "EntryRow",
    "EnvelopeRow",
    "ExpiryRow",
    "OffsetRow",
    "PromiseRow",
    "QuarantineRow",
    "RollupDay",
    "RollupRow",
    "SchemaRow",
    "Store",
    "keyset_pages",
    "with_cosignatures",
]


class EntryRow(NamedTuple):
    """One log entry: its canonical bytes and the columns derived from them (checked by verify)."""

    index: int  # type: ignore[assignment]  # a NamedTuple field may shadow tuple.index; it is the log index
    subject: str
    event_id: str | None
    parent: str | None
    """For token events, the parent token's subject (refresh, rotation, exchange); else None."""
    prev: bytes
    leaf: bytes
    verdict: str
    body: bytes


class EnvelopeRow(NamedTuple):
    """A signed batch as received: enough to re-check every event's signature offline."""

    digest: bytes
    producer: str
    key_id: str
    payload: bytes
    signature: bytes
    event_leaves: bytes
    """The concatenated 32-byte leaf hashes of the batch's events, in batch order."""
    first_index: int


class CheckpointRow(NamedTuple):
    """A signed checkpoint (C2SP signed note) for a tree size. As a store returns it, the note carries the
    log's signature followed by every witness cosignature stored for that size (``Store.add_cosignatures``)."""

    size: int
    note: str


class PromiseRow(NamedTuple):
    """The log's signed promise about entries ``first .. first + length - 1`` (core.receipt), as wire bytes."""

    first: int
    length: int
    promise: bytes


class ChainBreak(NamedTuple):
    """An entry whose ``prev`` is not the leaf hash of the previous entry of its subject."""

    index: int  # type: ignore[assignment]  # the log index (a NamedTuple field may shadow tuple.index)
    subject: str
    prev: bytes
    expected: bytes


class OffsetRow(NamedTuple):
    """A transport position committed with the rows read from it: after this write, ``source`` (for Kafka,
    the topic) is consumed up to ``next_offset`` (exclusive) in ``partition``. Append-only: the position of a
    partition is the largest ``next_offset`` recorded for it."""

    source: str
    partition: int
    next_offset: int


class SchemaRow(NamedTuple):
    """A transport schema (Avro) registered in the ledger, found by its fingerprint."""

    fingerprint: bytes
    name: str
    text: str
    """The schema's Parsing Canonical Form."""
    registered_at: str


class QuarantineRow(NamedTuple):
    """A transport message the ledger refused (not authentic, malformed): where it was, why, and its digest.

    ``value`` keeps the message only when it may become acceptable (kept for an operator) and holds nothing
    that looks like a raw token; otherwise it is None and only the SHA-256 ``digest`` remains."""

    source: str
    partition: int
    offset: int
    reason: str
    digest: bytes
    value: bytes | None


class RollupRow(NamedTuple):
    """One token's daily rollup (ledger.rollups): its events recorded on ``day`` (YYYY-MM-DD, UTC, of the
    ledger's clock), how many were uses, the first and last occurred_at and index among them, the resources
    its uses touched (a sorted JSON array) and how many uses had each outcome (a JSON object)."""

    day: str
    subject: str
    events: int
    uses: int
    first_at: str
    last_at: str
    first_idx: int
    last_idx: int
    resources: str
    outcomes: str


class RollupDay(NamedTuple):
    """A day whose rollups are stored: its entries are ``first .. end - 1``."""

    day: str
    first: int
    end: int


class ArchiveRow(NamedTuple):
    """An archived range as the signed ``archive`` entry at ``record`` names it (docs/archive.md): entries
    ``first`` .. ``last`` are in the file ``file`` under ``location``, whose SHA-256 is ``sha256``. While a
    row exists, the store lets the event entries of its range be deleted (and nothing else).

    ``edge_leaves`` holds the leaf hashes of the range's entries that share a 256-entry tile with entries
    outside it (at most 255 at each end), so proofs that cross the range never need its file."""

    first: int
    last: int
    location: str
    file: str
    sha256: bytes
    record: int
    edge_leaves: bytes


class ExpiryRow(NamedTuple):
    """An archived range past retention, as the signed ``expire`` entry at ``record`` names it, under the
    retention policy ``policy`` (recorded at index ``policy_index``)."""

    first: int
    last: int
    policy: str
    policy_index: int
    record: int


@dataclass(slots=True)
class BatchWrite:
    """Everything one append writes, committed in one transaction."""

    entries: list[EntryRow] = field(default_factory=list)
    envelopes: list[EnvelopeRow] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)
    checkpoint: CheckpointRow | None = None
    promise: PromiseRow | None = None
    """The log's signed promise about this write's entries (the seal entry aside)."""
    revocations: list[tuple[str, int]] = field(default_factory=list)
    """(token subject, log index of the REVOKED entry) for tokens this batch revokes."""
    map_nodes: list[tuple[bytes, bytes]] = field(default_factory=list)
    """New nodes of the subject map (hash, stored bytes); see ledger.completeness."""
    links: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    """Lineage lookups: (kind, key, occurred_at, log index, subject); kinds "resource" (a USED event's
    resource), "user" (the user a token was issued to), "input" (an asset read by a data event). The ledger
    writes a block's links with its seal (ledger.links); a link already stored is skipped, not refused."""
    offsets: list[OffsetRow] = field(default_factory=list)
    """Transport positions consumed by this write (exactly once: committed with the rows, or not at all)."""
    schemas: list[SchemaRow] = field(default_factory=list)
    """Transport schemas to register (one already registered under the same fingerprint is kept)."""
    quarantine: list[QuarantineRow] = field(default_factory=list)
    """Refused transport messages."""
    archives: list[ArchiveRow] = field(default_factory=list)
    """Archived ranges recorded by this write's ``archive`` entries."""
    archive_keys: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(key, first index of its archived range, lowest and highest index of its entries there): every subject
    (``s:<subject>``) and parent (``p:<parent>``) with entries in the range, so a query opens only the files
    it needs, and in each only the row groups of that index span."""
    expiries: list[ExpiryRow] = field(default_factory=list)
    """Archived ranges past retention, recorded by this write's ``expire`` entries."""


def with_cosignatures(rows: list[CheckpointRow], lines: Iterable[tuple[int, str]]) -> list[CheckpointRow]:
    """``rows`` with each (size, signature line) of ``lines`` appended to the note of that size."""
    extra: dict[int, list[str]] = {}
    for size, line in lines:
        extra.setdefault(int(size), []).append(str(line))
    return [CheckpointRow(row.size, row.note + "".join(extra[row.size])) if row.size in extra else row for row in rows]


def keyset_pages(
    read: Callable[[str, Sequence[Any]], list[Any]], select: str, key: Sequence[str], mark: str, page: int = 10_000
) -> Iterator[Any]:
    """The rows of ``select`` (a SELECT ... FROM ... without WHERE or ORDER BY) in the order of its ``key``
    columns, read a page at a time: each page starts after the previous page's last key (keyset paging),
    so no page rescans what came before and memory stays at one page. ``read(sql, params)`` runs a query;
    ``mark`` is the driver's placeholder ("?" or "%s"). The key columns come first in the selected row."""
    columns = ", ".join(key)
    query = f"{select} {{}}ORDER BY {columns} LIMIT {page}"
    after = f"WHERE ({columns}) > ({', '.join([mark] * len(key))}) "
    rows = read(query.format(""), ())
    while rows:
        yield from rows
        if len(rows) < page:
            return
        rows = read(query.format(after), rows[-1][: len(key)])


class Store(Protocol):
    """A ledger backend. Implementations: store.sqlite (embedded default); more to follow."""

    url: str

    def meta(self) -> dict[str, str]:
        """Settings written once at creation (origin, format version, the log's verifier key copy)."""
        ...

    def initialise(self, meta: dict[str, str]) -> None:
        """Write the creation settings; ConflictError if the store was already initialised."""
        ...

    def size(self) -> int:
        """Number of entries (the tree size)."""
        ...

    def lowest_index(self) -> int | None:
        """The lowest index any stored row has (None when there is none): 0 in an intact log, since the log
        is indexes 0 .. size-1; verification uses it to find rows slipped in below."""
        ...

    def write(self, batch: BatchWrite) -> None:
        """Commit the batch atomically and durably; ConflictError if an event id or index exists."""
        ...

    def entry(self, index: int) -> EntryRow:
        """The entry at ``index`` (NotFoundError if none)."""
        ...

    def entries(self, start: int, end: int) -> Iterator[EntryRow]:
        """Entries with start <= index < end, in index order."""
        ...

    def events_by_id(self, event_ids: Sequence[str]) -> dict[str, EntryRow]:
        """The entries recording these event ids (absent ids are left out)."""
        ...

    def subject_entries(self, subjects: Iterable[str]) -> list[EntryRow]:
        """All entries of these subjects, ordered by subject then index."""
        ...

    def subjects_with_prefix(self, prefix: str) -> list[EntryRow]:
        """All entries whose subject starts with ``prefix``, in index order."""
        ...

    def entries_at(self, indices: Sequence[int]) -> list[EntryRow]:
        """The entries at these indices (absent ones left out), in index order."""
        ...

    def children_of_many(self, subjects: Sequence[str]) -> list[EntryRow]:
        """Entries whose ``parent`` is any of ``subjects``, in index order."""
        ...

    def descendant_births(self, subject: str) -> list[EntryRow]:
        """Entries of every token descended from ``subject`` that name a parent (births), in index order."""
        ...

    def children_of(self, subject: str) -> list[EntryRow]:
        """Entries whose ``parent`` is ``subject``, in index order."""
        ...

    def leaf_hashes(self, start: int, count: int) -> list[bytes]:
        """Leaf hashes of entries start .. start+count-1 (all must exist)."""
        ...

    def nodes(self, level: int, start: int, count: int) -> list[bytes]:
        """Stored perfect-subtree hashes at ``level`` for indices start .. start+count-1."""
        ...

    def checkpoints(self, start_size: int = 0) -> list[CheckpointRow]:
        """Signed checkpoints with size >= start_size, in size order."""
        ...

    def latest_checkpoint(self) -> CheckpointRow | None:
        """The checkpoint with the largest size, if any."""
        ...

    def promises(self, start_first: int = -(1 << 63)) -> list[PromiseRow]:
        """Signed promises whose first index is >= start_first (by default every row, a row filed below 0
        included, for verify to judge), in index order."""
        ...

    def promise_covering(self, index: int) -> PromiseRow | None:
        """The stored promise whose range holds entry ``index``, if any."""
        ...

    def add_cosignatures(self, size: int, lines: Sequence[tuple[str, int, str]]) -> None:
        """Store witness cosignatures of the checkpoint of ``size``: (witness name, cosignature key id,
        signature line ending in a newline). The caller has verified them; one per witness and size is kept
        (a later one for the same witness and size is skipped, not refused). Off the write path: a small
        transaction of its own."""
        ...

    def cosigned_size(self, witness: str, key_id: int) -> int:
        """The largest checkpoint size this witness key has a stored cosignature for (0 if none)."""
        ...

    def add_timestamp(self, size: int, token: bytes) -> None:
        """Store an RFC 3161 TimeStampToken (DER) for the checkpoint of ``size``. The caller has verified it;
        one per size is kept (a later one is skipped, not refused). Off the write path: a small transaction of
        its own."""
        ...

    def timestamp(self, size: int) -> bytes | None:
        """The stored TimeStampToken (DER) of the checkpoint of ``size``, if any."""
        ...

    def timestamped_sizes(self) -> list[int]:
        """The checkpoint sizes that have a stored TimeStampToken, ascending."""
        ...

    def envelope(self, digest: bytes) -> EnvelopeRow:
        """The envelope with this digest (NotFoundError if none)."""
        ...

    def envelope_first_indexes(self) -> Iterator[tuple[bytes, int]]:
        """Every stored envelope as (digest, index of its first entry), in digest order, read in pages (the
        verifier checks each against the entries)."""
        ...

    def links(self, kind: str, key: str, start: str = "", end: str = "\uffff") -> list[tuple[str, int, str]]:
        """(occurred_at, log index, subject) of the stored ``kind`` links for ``key`` with start <= occurred_at
        < end. The open block's links are stored at its seal: ``ledger.links.find_links`` adds them."""
        ...

    def link_rows(self) -> Iterator[tuple[str, str, str, int, str]]:
        """Every stored link as (kind, key, occurred_at, log index, subject), in key order, read in pages
        (the verifier compares them with the links the entries give)."""
        ...

    def revocation_rows(self) -> list[tuple[str, int]]:
        """Every row of the revocation set: (token subject, index of its REVOKED entry)."""
        ...

    def subject_index_rows(self) -> tuple[int, Iterator[tuple[str, int]]] | None:
        """A subject index kept as a table of its own (SQLite's sorted runs), for the verifier: the index
        below which every entry must be in it, and its (subject, log index) rows in key order. None when the
        store indexes subjects inside the database's own indexing (PostgreSQL, older SQLite ledgers)."""
        ...

    def wal_bytes(self) -> int | None:
        """The size of the store's write-ahead log on disk, for monitoring (an SRE alerts on its growth).
        None where the database server manages its own log (PostgreSQL) or there is no file (in memory)."""
        ...

    def add_rollups(self, day: RollupDay, rows: Sequence[RollupRow]) -> None:
        """Store a day's token rollups and the day itself, in one transaction (ConflictError if the day is
        already stored). Off the write path: a transaction of its own."""
        ...

    def rollup_days(self) -> list[RollupDay]:
        """The days whose rollups are stored, oldest first."""
        ...

    def rollups(self, subject: str) -> list[RollupRow]:
        """The stored daily rollups of one token subject, oldest first."""
        ...

    def rollup_rows(self) -> Iterator[RollupRow]:
        """Every stored rollup, in key order, read in pages (the verifier recomputes each)."""
        ...

    def map_node(self, digest: bytes) -> bytes | None:
        """The stored bytes of the subject-map node with this hash, or None."""
        ...

    def map_nodes(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored bytes of those of these subject-map nodes that exist, in one round trip per chunk."""
        ...

    def map_node_rows(self) -> Iterator[tuple[bytes, bytes]]:
        """Every stored subject-map node as (hash, bytes), in hash order, read in pages (the verifier checks
        that each hashes to its name)."""
        ...

    def revoked(self, subjects: Sequence[str]) -> dict[str, int]:
        """Of these token subjects, those in the revocation set, with the index of their REVOKED entry."""
        ...

    def offsets(self, source: str) -> dict[int, int]:
        """partition -> next offset to read, for every partition of ``source`` with a committed position."""
        ...

    def schemas(self) -> list[SchemaRow]:
        """Every registered transport schema, in registration order."""
        ...

    def quarantined(self, source: str | None = None) -> list[QuarantineRow]:
        """Refused transport messages (of ``source``, or all), by source, partition and offset."""
        ...

    def chain_breaks(self, limit: int = 10) -> list[ChainBreak]:
        """Entries whose stored ``prev`` differs from the stored leaf of their subject's previous entry."""
        ...

    def archives(self) -> list[ArchiveRow]:
        """Every archived range, in index order (docs/archive.md)."""
        ...

    def archive_keys(self, keys: Sequence[str], prefix: bool = False) -> list[tuple[str, int, int, int]]:
        """(key, first index of an archived range, lowest and highest index of the key's entries there) for
        these keys (or, with ``prefix``, for every key that starts with one of them), in key order."""
        ...

    def expiries(self) -> list[ExpiryRow]:
        """Every archived range recorded as past retention, in index order."""
        ...

    def delete_archived(self, first: int, last: int) -> int:
        """Delete the event entries ``first`` .. ``last`` from the hot store (they are in an archive file);
        returns how many went. The database itself refuses unless an archived range holds every one."""
        ...

    def close(self) -> None:
        """Release the connection; further calls fail."""
        ...

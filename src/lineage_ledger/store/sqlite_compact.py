"""SQLite's store layout 2: the same tables as layout 1, holding nothing twice (store.sqlite picks the layout).

* ``subjects`` names every subject once; ``entries.subject``, ``entries.parent``, ``subject_index.subject``
  and ``links.subject`` hold its integer ``sid`` instead of the text.
* ``link_keys`` names every (kind, key) of the links once; ``links.key`` holds its integer id.
* ``entries.body`` holds the compact form of the entry (store.compact), ``entries.env`` the ``n`` of the
  envelope an event entry came in (``envelopes.n``), ``entries.event_id`` the 16 bytes of a UUID event id,
  ``entries.prev`` NULL for the first entry of a subject (64 zeros in the body).
* ``dictionaries`` holds the zstd dictionaries bodies are compressed with, trained on the ledger's entries.

Columns are declared without a type where they hold an id: a value of another type (text where an id is
expected) is read as it is, so a row changed behind the store's back reads as changed, and verify says so.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

from lineage_ledger.core.entry import ZERO_HASH
from lineage_ledger.store.base import EntryRow, EnvelopeRow
from lineage_ledger.store.compact import (
    PROMISE_DICTIONARY,
    PROMISE_DICTIONARY_BYTES,
    BodyCodec,
    Envelope,
    event_id_key,
    event_id_text,
    train_dictionary,
)

__all__ = [
    "COMPACT_SCHEMA",
    "COMPACT_TABLES",
    "ENTRY_SELECT",
    "TRAIN_AT",
    "CompactWriter",
    "Names",
    "entry_row",
    "name_of",
]

COMPACT_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subjects (sid INTEGER PRIMARY KEY, subject TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    subject NOT NULL,
    event_id UNIQUE,
    parent,
    prev,
    leaf BLOB NOT NULL,
    verdict TEXT NOT NULL,
    body BLOB NOT NULL,
    env
);
CREATE INDEX IF NOT EXISTS entries_parent ON entries (parent) WHERE parent IS NOT NULL;
CREATE TABLE IF NOT EXISTS envelopes (
    n INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    producer TEXT NOT NULL,
    key_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    signature BLOB NOT NULL,
    event_leaves BLOB NOT NULL,
    first_idx INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dictionaries (id INTEGER PRIMARY KEY, dict BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS promises (first INTEGER PRIMARY KEY, length INTEGER NOT NULL, promise BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (subject TEXT PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS map_nodes (hash BLOB PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS link_keys (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    UNIQUE (kind, key)
);
CREATE TABLE IF NOT EXISTS links (
    key NOT NULL,
    at TEXT NOT NULL,
    idx INTEGER NOT NULL,
    subject NOT NULL,
    PRIMARY KEY (key, at, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
    source TEXT NOT NULL,
    part INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (source, part, next_offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schemas (
    fingerprint BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    source TEXT NOT NULL,
    part INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    reason TEXT NOT NULL,
    digest BLOB NOT NULL,
    value BLOB,
    PRIMARY KEY (source, part, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_index (
    subject NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (subject, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_index_mark (through INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL,
    witness TEXT NOT NULL,
    key_id INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (size, witness, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timestamps (size INTEGER PRIMARY KEY, token BLOB NOT NULL);
"""
COMPACT_TABLES: Final = ("subjects", "link_keys", "dictionaries")
"""The tables layout 2 adds to layout 1's."""

ENTRY_SELECT: Final = (
    "SELECT e.idx, coalesce(s.subject, e.subject), e.event_id, coalesce(p.subject, e.parent), e.prev, e.leaf, "
    "e.verdict, e.body, v.digest, v.producer, v.key_id FROM entries AS e "
    "LEFT JOIN subjects AS s ON s.sid = e.subject LEFT JOIN subjects AS p ON p.sid = e.parent "
    "LEFT JOIN envelopes AS v ON v.n = e.env"
)
"""Entry rows with what their bodies are rebuilt from (``entry_row``); WHERE clauses name ``e.`` columns."""

TRAIN_AT: Final = 2_000
"""Entries written in compact form before the first dictionary is trained on them (and stored)."""
PROMISE_TRAIN_AT: Final = 200
"""Signed promises written as they are before their dictionary is trained on them."""
_CACHE_NAMES: Final = 1 << 20
"""Names (subjects, link keys) a writer keeps in memory; past this the cache starts over."""


def name_of(value: object) -> str:
    """The text of a stored name: itself, or (an id no row names, a changed value) a text no real name has."""
    return value if isinstance(value, str) else f"#{value!r}"


def entry_row(codec: BodyCodec, row: Sequence[Any]) -> EntryRow:
    """The EntryRow of a row of ENTRY_SELECT, its body rebuilt."""
    idx, subject, event_id, parent, prev, leaf, verdict, body, digest, producer, key_id = row
    subject = name_of(subject)
    event_id = event_id_text(event_id)
    parent = None if parent is None else name_of(parent)
    env = None if digest is None else (bytes(digest), str(producer), str(key_id))
    prev = ZERO_HASH if prev is None else prev
    return EntryRow(
        idx,
        subject,
        event_id,
        parent,
        prev,
        leaf,
        verdict,
        codec.decode(body, idx, subject, event_id, prev, verdict, env),
    )


class Names:
    """Subjects and link keys to their ids and back, reading the tables and remembering what it read."""

    def __init__(self) -> None:
        self.sids: dict[str, int] = {}
        self.link_ids: dict[tuple[str, str], int] = {}
        self.next_sid = 0
        self.next_link = 0

    def load_counters(self, db: sqlite3.Connection) -> None:
        """The next free ids, as the tables say (the writer's, at open)."""
        self.next_sid = int(db.execute("SELECT coalesce(max(sid), 0) + 1 FROM subjects").fetchone()[0])
        self.next_link = int(db.execute("SELECT coalesce(max(id), 0) + 1 FROM link_keys").fetchone()[0])

    def sids_of(self, db: sqlite3.Connection, subjects: Iterable[str]) -> dict[str, int]:
        """The ids of those of ``subjects`` that are stored."""
        out: dict[str, int] = {}
        missing = []
        for subject in dict.fromkeys(subjects):
            sid = self.sids.get(subject)
            if sid is None:
                missing.append(subject)
            else:
                out[subject] = sid
        for i in range(0, len(missing), 900):
            chunk = missing[i : i + 900]
            marks = ",".join("?" * len(chunk))
            for sid, subject in db.execute(f"SELECT sid, subject FROM subjects WHERE subject IN ({marks})", chunk):
                out[subject] = sid
        return out

    def link_ids_of(self, db: sqlite3.Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The ids of those of the (kind, key) pairs that are stored."""
        out: dict[tuple[str, str], int] = {}
        for pair in dict.fromkeys(keys):
            found = self.link_ids.get(pair)
            if found is None:
                row = db.execute("SELECT id FROM link_keys WHERE kind = ? AND key = ?", pair).fetchone()
                if row is None:
                    continue
                found = row[0]
            out[pair] = found
        return out

    def remember(self, sids: dict[str, int], link_ids: dict[tuple[str, str], int]) -> None:
        """Keep committed ids for the next writes."""
        if len(self.sids) + len(sids) > _CACHE_NAMES:
            self.sids = {}
        if len(self.link_ids) + len(link_ids) > _CACHE_NAMES:
            self.link_ids = {}
        self.sids.update(sids)
        self.link_ids.update(link_ids)


class CompactWriter:
    """Turns one write's rows into layout 2's rows, assigning ids to new names and envelopes; ``commit``
    adopts the ids once the transaction is committed (a rolled-back write leaves no trace here)."""

    def __init__(self, names: Names, codec: BodyCodec, next_envelope: int) -> None:
        self.names = names
        self.codec = codec
        self.next_envelope = next_envelope
        self.samples: list[bytes] = []
        """Compact bodies written before the first dictionary: what it is trained on."""
        self._pending: tuple[dict[str, int], dict[tuple[str, str], int], int, int, int, list[bytes]] | None = None
        self.promise_samples: list[bytes] = []
        self._trained: list[tuple[int, list[bytes]]] = []
        """Dictionaries trained for a write not yet committed, and the samples each was trained on."""
        self.promise: bytes | None = None
        """The stored form of the last ``rows``' promise."""
        self.pairs: list[tuple[int, int]] = []
        """(sid, idx) of the last ``rows``' entries, for the subject index's runs."""

    def rows(
        self,
        db: sqlite3.Connection,
        entries: Sequence[EntryRow],
        envelopes: Sequence[EnvelopeRow],
        links: Sequence[tuple[str, str, str, int, str]],
        promise: bytes | None = None,
    ) -> dict[str, list[tuple[Any, ...]]]:
        """The rows to insert, by table."""
        self._forget()
        names = self.names
        wanted = [e.subject for e in entries]
        wanted += [e.parent for e in entries if e.parent is not None]
        wanted += [link[4] for link in links]
        sids = names.sids_of(db, wanted)
        next_sid = names.next_sid
        new_subjects = []
        for subject in wanted:
            if subject not in sids:
                sids[subject] = next_sid
                new_subjects.append((next_sid, subject))
                next_sid += 1
        link_ids = names.link_ids_of(db, [(k[0], k[1]) for k in links])
        next_link = names.next_link
        new_keys = []
        for kind, key, *_ in links:
            if (kind, key) not in link_ids:
                link_ids[(kind, key)] = next_link
                new_keys.append((next_link, kind, key))
                next_link += 1
        by_digest: dict[bytes, tuple[int, Envelope]] = {}
        envelope_rows = []
        n = self.next_envelope
        for env in envelopes:
            by_digest[env.digest.hex().encode()] = (n, (env.digest, env.producer, env.key_id))
            envelope_rows.append((n, *env))
            n += 1
        out: dict[str, list[tuple[Any, ...]]] = {"subjects": new_subjects, "link_keys": new_keys}
        dictionaries = []
        if not self.codec.trained and len(self.samples) >= TRAIN_AT:
            trained = train_dictionary(self.samples)
            if trained is not None:
                dictionaries.append((1, trained))
                self.codec.add_dictionary(1, trained)
            self._trained.append((1, self.samples))
            self.samples = []
        if promise is not None and not self.codec.promises_trained:
            if len(self.promise_samples) >= PROMISE_TRAIN_AT:
                trained = train_dictionary(self.promise_samples, PROMISE_DICTIONARY_BYTES)
                if trained is not None:
                    dictionaries.append((PROMISE_DICTIONARY, trained))
                    self.codec.add_dictionary(PROMISE_DICTIONARY, trained)
                self._trained.append((PROMISE_DICTIONARY, self.promise_samples))
                self.promise_samples = []
            elif promise[:1] == b"{":
                self.promise_samples.append(promise)  # kept if the write is not committed: a sample all the same
        self.promise = None if promise is None else self.codec.encode_promise(promise)
        out["dictionaries"] = dictionaries
        samples: list[bytes] = []
        entry_rows = []
        for e in entries:
            named = _envelope_of(db, e.body, by_digest)
            stored, sample = self.codec.encode(
                e.body, e.index, e.subject, e.event_id, e.prev, e.verdict, None if named is None else named[1]
            )
            if sample is not None and not self.codec.trained:
                samples.append(sample)
            entry_rows.append(
                (
                    e.index,
                    sids[e.subject],
                    event_id_key(e.event_id),
                    None if e.parent is None else sids[e.parent],
                    None if e.prev == ZERO_HASH else e.prev,
                    e.leaf,
                    e.verdict,
                    stored,
                    None if named is None else named[0],
                )
            )
        out["entries"] = entry_rows
        out["envelopes"] = envelope_rows
        self.pairs = [(row[1], row[0]) for row in entry_rows]
        out["links"] = [(link_ids[(kind, key)], at, idx, sids[subject]) for kind, key, at, idx, subject in links]
        self._pending = (
            {s: sids[s] for s in wanted},
            link_ids,
            next_sid,
            next_link,
            n,
            samples,
        )
        return out

    def commit(self) -> None:
        """The rows of the last ``rows`` are committed: keep their ids."""
        if self._pending is None:
            return
        sids, link_ids, next_sid, next_link, n, samples = self._pending
        self._pending = None
        self._trained = []
        self.names.remember(sids, link_ids)
        self.names.next_sid, self.names.next_link, self.next_envelope = next_sid, next_link, n
        if not self.codec.trained:
            self.samples.extend(samples)

    def _forget(self) -> None:
        """The last ``rows`` were not committed: forget a dictionary trained for them."""
        self._pending = None
        for dict_id, samples in self._trained:
            self.codec.drop_dictionary(dict_id)
            if dict_id == PROMISE_DICTIONARY:
                self.promise_samples = samples
            else:
                self.samples = samples
        self._trained = []


def _envelope_of(
    db: sqlite3.Connection, body: bytes, by_digest: dict[bytes, tuple[int, Envelope]]
) -> tuple[int, Envelope] | None:
    """The stored envelope an event entry's body names (None for other entries, or one not stored).
    ``by_digest`` is keyed by the digest's hex, as the body spells it."""
    if not body.startswith(b'{"envelope":"'):
        return None
    named = body[13:77]
    found = by_digest.get(named)
    if found is None:
        try:
            digest = bytes.fromhex(named.decode())
        except ValueError:
            return None
        row = db.execute("SELECT n, producer, key_id FROM envelopes WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return None
        found = by_digest[named] = (row[0], (digest, row[1], row[2]))
    return found

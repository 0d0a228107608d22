"""A seal's links and subject-map nodes are written after it, a slice per commit (publish.SealDebt); until they
all are, readers, evidence and a reopening writer derive them from the block's entries."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineage_ledger.core.entry import SealEntry, decode_entry
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger import publish
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.ledger.links import find_links
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.offline import verify_bundle
from lineage_ledger.store import open_store
from lineage_ledger.store.base import BatchWrite, Store
from tests.ledger.test_lineage import Book, tokens
from tests.ledger.test_links import QUERIES, _answers, _workload

WORKLOAD_ENTRIES = 10
"""Two key registrations and the eight events of _workload."""


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Book]:
    """The same workload with no seal at all: what every answer must be."""
    b = Book(tmp_path / "plain.db")
    _workload(b, "one", 0)
    yield b
    b.close()


@pytest.fixture
def sealing(tmp_path: Path) -> Iterator[Book]:
    """A ledger whose block fills with the workload's last event, so that append seals it automatically."""
    b = Book(tmp_path / "sealing.db")
    b.ledger.settings = dataclasses.replace(b.ledger.settings, block_size=WORKLOAD_ENTRIES)
    yield b
    b.close()


def _root_stored(store: Store) -> bool:
    latest = store.latest_checkpoint()
    assert latest is not None
    seal = decode_entry(store.entry(latest.size - 1).body)
    assert isinstance(seal, SealEntry)
    return store.map_node(bytes.fromhex(seal.block.subjects_root)) is not None


def _size(store: Store) -> int:
    latest = store.latest_checkpoint()
    assert latest is not None
    return latest.size


def _stored(store: Store) -> dict[tuple[str, str], list[tuple[str, int, str]]]:
    return {(kind, key): store.links(kind, key) for kind, key in QUERIES}


def test_an_automatic_seal_owes_its_links_and_readers_still_see_them(
    plain: Book, sealing: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one owed row per commit, to watch it being paid
    monkeypatch.setattr(publish.SealDebt, "slice_for", lambda _debt, _entries, _block_size: 1)
    expected = _answers(plain)
    assert [i for _, i, _ in expected[("resource", "/r")]] == [4, 5]
    reader = open_store(sealing.url, readonly=True)
    try:
        _workload(sealing, "one", 0)
        store = sealing.ledger.store
        assert _size(store) == WORKLOAD_ENTRIES + 1
        # the seal's commit carried none of its links or map nodes
        assert not _root_stored(store)
        assert all(found == [] for found in _stored(store).values())
        assert _answers(sealing) == expected
        assert {(k, key): find_links(reader, k, key) for k, key in QUERIES} == expected
        # evidence under that seal needs its map nodes: rebuilt from the block's entries, and it verifies
        a = tokens("one-a")[0]
        report = verify_bundle(export_evidence(store, a))
        assert report.ok, report.problems
        assert report.complete
        assert report.tree_size == WORKLOAD_ENTRIES + 1

        # each later commit pays one owed row, links first
        sealing.token("USED", a, 50, resource="/t", outcome="ALLOW")
        assert sum(len(found) for found in _stored(store).values()) == 1
        assert _answers(sealing) == expected
        # the next seal carries whatever is left
        sealing.ledger.settings = dataclasses.replace(sealing.ledger.settings, block_size=2)
        sealing.token("USED", a, 51, resource="/t", outcome="ALLOW")
        assert _size(store) == WORKLOAD_ENTRIES + 4
        assert _stored(store) == expected
        first = decode_entry(store.entry(WORKLOAD_ENTRIES).body)
        assert isinstance(first, SealEntry)
        assert store.map_node(bytes.fromhex(first.block.subjects_root)) is not None
        assert not _root_stored(store)  # the second seal owes its own now
        assert [i for _, i, _ in find_links(reader, "resource", "/t")] == [WORKLOAD_ENTRIES + 1, WORKLOAD_ENTRIES + 2]
        assert store.links("resource", "/t") == []
        # a clean close pays it
        sealing.ledger.close()
        assert _root_stored(reader)
        assert [i for _, i, _ in reader.links("resource", "/t")] == [WORKLOAD_ENTRIES + 1, WORKLOAD_ENTRIES + 2]
    finally:
        reader.close()


def test_a_writer_stopped_while_owing_loses_nothing(plain: Book, sealing: Book) -> None:
    _workload(sealing, "one", 0)
    assert not _root_stored(sealing.ledger.store)
    sealing.ledger.store.close()  # as if killed: the debt was only in memory
    reopened = Ledger.open(sealing.url, sealing.log, settings=LedgerSettings(block_size=100_000, block_seconds=1e9))
    sealing.ledger = reopened
    store = reopened.store
    assert not _root_stored(store)
    assert _answers(sealing) == _answers(plain)
    # the reopened writer owes the same rows again: its next commit pays them (a slice of at least 256)
    sealing.token("USED", tokens("one-a")[0], 50, resource="/t", outcome="ALLOW")
    assert _root_stored(store)
    assert _stored(store) == _answers(plain)
    report = verify_ledger(sealing.url)
    assert report.ok, report.problems


def test_a_block_whose_entries_do_not_give_its_seals_map_root_is_refused_on_open(sealing: Book) -> None:
    _workload(sealing, "one", 0)
    sealing.ledger.store.close()  # the writer stops (as if it crashed) still owing the block's map nodes
    db = sqlite3.connect(sealing.url)
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        db.execute("UPDATE entries SET leaf = ? WHERE idx = 9", (bytes(32),))  # the report asset's head
        db.commit()
    finally:
        db.close()
    with pytest.raises(LedgerError, match="block 0's entries give subject-map root"):
        Ledger.open(sealing.url, sealing.log)


def test_once_paid_the_debt_is_not_written_again(sealing: Book, monkeypatch: pytest.MonkeyPatch) -> None:
    _workload(sealing, "one", 0)
    sealing.ledger.settings = dataclasses.replace(sealing.ledger.settings, block_size=100_000)
    store = sealing.ledger.store
    owed: list[int] = []
    write = store.write

    def counting(batch: BatchWrite) -> None:
        owed.append(len(batch.links) + len(batch.map_nodes))
        write(batch)

    monkeypatch.setattr(store, "write", counting)
    a = tokens("one-a")[0]
    for n in range(4):
        sealing.token("USED", a, 50 + n, resource="/t", outcome="ALLOW")
    assert owed[0] > 0  # the first commit after the seal pays it all (fewer than 256 rows)
    assert owed[1:] == [0, 0, 0]
    assert _root_stored(store)

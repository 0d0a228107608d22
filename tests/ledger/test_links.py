"""Lineage links are written at seals; until then they follow from the open block's entries (ledger.links)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lineage_ledger.ledger.links import find_links
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import open_store
from lineage_ledger.store.base import BatchWrite
from tests.ledger.test_lineage import Book, hlc, tokens


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    b = Book(tmp_path / "links.db")
    yield b
    b.close()


def _workload(book: Book, label: str, start: float) -> None:
    """Token births and uses on shared resources, and a small data pipeline: every kind of link."""
    a, b = tokens(f"{label}-a", f"{label}-b")
    book.token("ISSUED", a, start, user_id="alice", scopes=("read",))
    book.token("ISSUED", b, start + 1, user_id="bob", scopes=("read",))
    book.token("USED", a, start + 2, resource="/r", outcome="ALLOW")
    book.token("USED", b, start + 3, resource="/r", outcome="DENY")
    book.token("USED", a, start + 4, resource="/s", outcome="ALLOW")
    book.data("CREATED", f"{label}-raw", start + 5)
    book.data("TRANSFORMED", f"{label}-clean", start + 6, inputs=[f"{label}-raw"])
    book.data("AGGREGATED", f"{label}-report", start + 7, inputs=[f"{label}-raw", f"{label}-clean"])


QUERIES = [
    ("resource", "/r"),
    ("resource", "/s"),
    ("user", "alice"),
    ("user", "bob"),
    ("input", "one-raw"),
    ("input", "one-clean"),
    ("input", "two-raw"),
]


def _answers(book: Book) -> dict[tuple[str, str], list[tuple[str, int, str]]]:
    return {(kind, key): find_links(book.ledger.store, kind, key) for kind, key in QUERIES}


def test_the_seal_writes_the_links_the_open_block_implied(book: Book) -> None:
    _workload(book, "one", 0)
    store = book.ledger.store
    before = _answers(book)
    assert [i for _, i, _ in before[("resource", "/r")]] == [4, 5]  # after the two key registrations
    assert len(before[("input", "one-raw")]) == 2
    assert all(store.links(kind, key) == [] for kind, key in QUERIES)  # none stored yet
    book.ledger.seal()
    # the store now holds exactly what was derived, and the answers are unchanged
    assert {(kind, key): store.links(kind, key) for kind, key in QUERIES} == before
    assert _answers(book) == before
    # a second block: its links are derived again, beside the stored ones
    _workload(book, "two", 100)
    after = _answers(book)
    assert len(after[("resource", "/r")]) == 4
    assert after[("resource", "/r")][:2] == before[("resource", "/r")]
    assert after[("input", "two-raw")] != []
    assert store.links("input", "two-raw") == []
    book.ledger.seal()
    assert {(kind, key): store.links(kind, key) for kind, key in QUERIES} == after


def test_a_reader_on_its_own_connection_follows_the_writer_across_seals(book: Book) -> None:
    reader = open_store(book.url, readonly=True)
    try:
        assert find_links(reader, "resource", "/r") == []
        _workload(book, "one", 0)
        first = find_links(reader, "resource", "/r")
        assert [at for at, _, _ in first] == [hlc(2), hlc(3)]
        book.ledger.seal()
        assert find_links(reader, "resource", "/r") == first  # now from the table, not twice
        _workload(book, "two", 100)
        assert [at for at, _, _ in find_links(reader, "resource", "/r")] == [hlc(2), hlc(3), hlc(102), hlc(103)]
        assert [at for at, _, _ in find_links(reader, "resource", "/r", hlc(3), hlc(103))] == [hlc(3), hlc(102)]
    finally:
        reader.close()


def test_a_writer_stopped_before_its_seal_loses_no_link(book: Book) -> None:
    _workload(book, "one", 0)
    before = _answers(book)
    book.ledger.close()  # no seal: the links were only in memory
    reopened = Ledger.open(book.url, book.log, settings=LedgerSettings(block_size=100_000, block_seconds=1e9))
    book.ledger = reopened
    assert _answers(book) == before
    reopened.seal()
    assert {(kind, key): reopened.store.links(kind, key) for kind, key in QUERIES} == before


def test_links_stored_with_each_batch_by_an_older_version_are_not_written_twice(book: Book) -> None:
    _workload(book, "one", 0)
    store = book.ledger.store
    before = _answers(book)
    # as a ledger written before links moved to seals holds them: the open block's links already stored
    rows = [(kind, key, at, idx, subject) for (kind, key), found in before.items() for at, idx, subject in found]
    store.write(BatchWrite(links=rows))
    assert _answers(book) == before  # merged by log index, not listed twice
    book.ledger.seal()  # writes the same links again: skipped, not refused
    assert {(kind, key): store.links(kind, key) for kind, key in QUERIES} == before

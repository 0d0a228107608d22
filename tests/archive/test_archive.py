"""``lineage archive``: sealed blocks into Parquet files, reads across tiers, the database's guard, proofs.

Every test runs on SQLite and PostgreSQL (conftest.ledger_url)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.archive.tiered import TieredStore
from lineage_ledger.archive.writer import archive_ledger
from lineage_ledger.core.entry import ArchiveEntry, decode_entry
from lineage_ledger.core.merkle import leaf_hash, root_of, verify_inclusion
from lineage_ledger.core.note import Checkpoint
from lineage_ledger.errors import StoreError
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store
from tests.archive.helpers import CHILD, NEW, OLD, SETTINGS, build
from tests.conftest import make_log_signer


def _snapshot(url: str) -> dict[str, list[tuple[int, bytes]]]:
    store = open_store(url, readonly=True)
    try:
        lin = Lineage(store)
        return {t: [(r.index, r.leaf) for r in store.subject_entries(["token:" + t])] for t in (OLD, NEW, CHILD)} | {
            "family": [(0, repr(lin.family(NEW).edges).encode())]
        }
    finally:
        store.close()


def test_archive_moves_sealed_blocks_and_queries_answer_from_both_tiers(ledger_url: str, tmp_path: Path) -> None:
    built = build(ledger_url)
    before = _snapshot(ledger_url)
    entries_before = list(open_store(ledger_url, readonly=True).entries(0, built.size))
    with Ledger.open(ledger_url, make_log_signer(), settings=SETTINGS) as ledger:
        done = archive_ledger(ledger, ArchiveLocation(str(tmp_path / "arch")), built.cut)
    assert [(f.first, f.last) for f in done] == [(0, built.archived_last)]
    assert done[0].deleted > 0

    store = open_store(ledger_url, readonly=True)
    try:
        assert isinstance(store, TieredStore)
        hot = list(store.hot.entries(0, built.archived_last + 1))
        assert hot
        assert all(r.event_id is None for r in hot)  # only system entries (keys, seals) stay hot
        # the file is what the signed record names
        (archive,) = store.archives()
        data = (tmp_path / "arch" / archive.file).read_bytes()
        record = decode_entry(store.entry(archive.record).body)
        assert isinstance(record, ArchiveEntry)
        assert record.change.sha256 == hashlib.sha256(data).hexdigest() == archive.sha256.hex()
        assert record.change.root == root_of([e.leaf for e in entries_before[: built.archived_last + 1]]).hex()
        # every entry reads back the same, across tiers
        assert list(store.entries(0, built.size)) == entries_before
        store.take_report()
        old = store.subject_entries(["token:" + OLD])
        assert store.take_report().names() == ["archive"]
        both = store.subject_entries(["token:" + NEW])
        assert store.take_report().names() == ["hot", "archive"]
        assert {i for i, _ in before[OLD]} == {r.index for r in old}
        assert [(r.index, r.leaf) for r in both] == before[NEW]
        assert repr(Lineage(store).family(NEW).edges).encode() == before["family"][0][1]
        # an archived entry's inclusion proof verifies against the signed checkpoint
        checkpoint = store.latest_checkpoint()
        assert checkpoint is not None
        proofs = Lineage(store).proofs([old[0].index])
        size = proofs["tree_size"]
        proof = [bytes.fromhex(h) for h in proofs["inclusion"][str(old[0].index)]]
        cp = Checkpoint.from_text(checkpoint.note.split("\n\n")[0] + "\n")
        verify_inclusion(leaf_hash(old[0].body), old[0].index, size, proof, cp.root_hash)
    finally:
        store.close()
    report = verify_ledger(ledger_url)
    assert report.ok, report.problems


def test_the_database_refuses_deleting_entries_outside_an_archived_range(ledger_url: str, tmp_path: Path) -> None:
    built = build(ledger_url)
    store = open_store(ledger_url)
    try:
        with pytest.raises(StoreError, match="append-only"):
            store.delete_archived(0, built.archived_last)  # nothing recorded as archived yet
    finally:
        store.close()
    with Ledger.open(ledger_url, make_log_signer(), settings=SETTINGS) as ledger:
        archive_ledger(ledger, ArchiveLocation(str(tmp_path / "arch")), built.cut)
        store = ledger.store
        with pytest.raises(StoreError, match="append-only"):
            store.delete_archived(built.archived_last + 1, built.size - 1)  # hot, never archived
        assert store.delete_archived(0, built.archived_last) == 0  # the range's event entries are gone already
    assert verify_ledger(ledger_url).ok


def test_the_writer_chains_and_judges_new_events_against_archived_history(ledger_url: str, tmp_path: Path) -> None:
    """A token whose history is all archived: its next event links to its last archived entry, and the
    lifecycle rules judge it with that history (a use after a revocation is flagged)."""
    from lineage_ledger.core.envelope import seal_batch
    from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_event

    built = build(ledger_url)
    with Ledger.open(ledger_url, make_log_signer(), settings=SETTINGS) as ledger:
        archive_ledger(ledger, ArchiveLocation(str(tmp_path / "arch")), built.cut)
    with Ledger.open(ledger_url, make_log_signer(), settings=SETTINGS) as ledger:
        last_archived = ledger.store.subject_entries(["token:" + OLD])[-1]
        assert ledger.store.archive_of(last_archived.index) is not None  # type: ignore[attr-defined]
        later = int(ledger.now().split(".")[0])
        events = [token_event("REVOKED", OLD, later), token_event("USED", OLD, later + 1, resource="/x")]
        batch = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
        receipts = ledger.append(batch).receipts
        ledger.seal()
        revoked = ledger.store.entry(receipts[0].index)
    assert [r.verdict for r in receipts] == ["ok", "token.use_after_revoke"]
    assert revoked.prev == last_archived.leaf
    assert verify_ledger(ledger_url).ok

"""The faster paths inside verify_ledger, held to the reference implementations they replace.

* the bulk Merkle helpers (block and batch roots level by level, the chunk's tree fed whole tiles at a time)
  against core.merkle's root_of and CompactRange appended leaf by leaf;
* the verifier's own subject map against core.smt;
* the checks that moved: chain links across chunks (once one SQL query over the whole table), envelopes
  checked in the workers, token events judged from the bytes the workers read (and those the event model
  rejects left out, as before);
* a chunk reads on past a run of deleted entries long enough to end the store's paging;
* both ways of starting workers (fork where safe, spawn elsewhere), and the heap frozen around forking.
"""

from __future__ import annotations

import gc
import hashlib
import random
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core import smt
from lineage_ledger.core.merkle import TILE_STRIDE, CompactRange, leaf_hash, root_of
from lineage_ledger.ledger import verify as verify_module
from lineage_ledger.ledger.verify import VerifyReport, verify_ledger
from lineage_ledger.store import open_store
from tests.conftest import BLOCK_SIZE, LEDGER_EVENTS, BuiltLedger


def _leaves(count: int, seed: int = 0) -> list[bytes]:
    return [hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(count)]


# -- Merkle helpers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [*range(0, 70), 255, 256, 257, 1000, 1023, 1024, 1025])
def test_mth_is_rfc9162_root(count: int) -> None:
    leaves = _leaves(count)
    assert verify_module._mth(leaves) == root_of(leaves)


def _reference(begin: int, leaves: list[bytes]) -> tuple[tuple[bytes, ...], dict[tuple[int, int], bytes]]:
    seen: dict[tuple[int, int], bytes] = {}

    def visit(level: int, index: int, digest: bytes) -> None:
        if level % TILE_STRIDE == 0:
            seen[(level, index)] = digest

    tree = CompactRange(begin)
    for leaf in leaves:
        tree.append(leaf, visit)
    return tree.hashes, seen


@given(
    begin=st.sampled_from([0, 1, 100, 255, 256, 257, 511, 65_535, 65_536, 70_001]),
    count=st.integers(0, 1400),
    flushes=st.lists(st.tuples(st.integers(1, 700), st.booleans()), max_size=6),
)
def test_tree_feed_matches_leaf_by_leaf_appends(begin: int, count: int, flushes: list[tuple[int, bool]]) -> None:
    leaves = _leaves(count, begin)
    seen: dict[tuple[int, int], bytes] = {}

    def visit(level: int, index: int, digest: bytes) -> None:
        if level % TILE_STRIDE == 0:
            seen[(level, index)] = digest

    feed = verify_module._TreeFeed(begin, visit)
    at = 0
    for step, everything in flushes:  # flushes at arbitrary points, of whole tiles or of everything
        feed.pending.extend(leaves[at : at + step])
        at += step
        feed.flush(everything=everything)
        assert feed.end == begin + min(at, count)
    feed.pending.extend(leaves[at:])
    hashes, expected_nodes = _reference(begin, leaves)
    assert feed.hashes() == hashes
    assert feed.range.end == begin + count
    assert seen == expected_nodes


# -- the subject map ----------------------------------------------------------------------------------------


def _check_shape(node: Any, depth: int = 0, prefix: int = 0) -> int:
    """Walk the verifier's map: every leaf lies on its key's path, every interior node holds at least two
    leaves and its hash is the hash of its children; returns the number of leaves."""
    if node is None:
        return 0
    if isinstance(node, tuple):
        key, _ = node
        assert depth == 0 or key >> (256 - depth) == prefix
        return 1
    left, right, digest = node
    name = [smt.EMPTY if child is None else child[-1] for child in (left, right)]
    assert digest == smt.interior_hash(*name)
    leaves = _check_shape(left, depth + 1, prefix << 1) + _check_shape(right, depth + 1, (prefix << 1) | 1)
    assert leaves >= 2
    return leaves


@given(
    blocks=st.lists(
        st.lists(st.tuples(st.integers(0, 60), st.integers(1, 4)), min_size=0, max_size=25),
        min_size=1,
        max_size=12,
    )
)
def test_subject_map_matches_core_smt(blocks: list[list[tuple[int, int]]]) -> None:
    """Block after block, the verifier's map has the root core.smt gives for the same heads, both updated in
    place and built from scratch, and it holds exactly the current tree."""
    mine = verify_module._SubjectMap()
    root, stored = smt.EMPTY, dict[bytes, smt.Node]()
    heads: dict[bytes, smt.SubjectHead] = {}
    index = 0
    for block in blocks:
        touched: dict[bytes, tuple[bytes, int, int]] = {}
        for subject, entries in block:
            key = smt.key_of(f"token:{subject}")
            leaf = hashlib.sha256(f"{subject}-{index}".encode()).digest()
            _, added, _ = touched.get(key, (b"", 0, 0))
            index += entries
            touched[key] = (leaf, added + entries, index)
        changes = {}
        for key, (leaf, added, last) in touched.items():
            count = (heads[key].count if key in heads else 0) + added
            heads[key] = changes[key] = smt.SubjectHead(leaf, count, last)
        root, new = smt.update(root, changes, stored.__getitem__)
        stored.update(new)
        assert mine.advance(touched) == root.hex() == smt.root_of(heads).hex()
        assert _check_shape(mine.tree) == len(heads)


def test_subject_map_of_many_subjects() -> None:
    rng = random.Random(7)
    mine = verify_module._SubjectMap()
    heads: dict[bytes, smt.SubjectHead] = {}
    for block in range(6):
        touched = {}
        for subject in rng.sample(range(3000), 700):
            key = smt.key_of(f"asset:{subject}")
            touched[key] = (hashlib.sha256(f"{block}-{subject}".encode()).digest(), 2, 10_000 * (block + 1) + subject)
            count = (heads[key].count if key in heads else 0) + 2
            heads[key] = smt.SubjectHead(touched[key][0], count, touched[key][2])
        assert mine.advance(touched) == smt.root_of(heads).hex()
    assert _check_shape(mine.tree) == len(heads)


# -- checks that moved, through verify_ledger ----------------------------------------------------------------

MODES = ("workers1", "workers2-split", "spawn-split")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    chosen: str = request.param
    if chosen.endswith("-split"):
        chunks = verify_module._chunks

        def two_blocks_per_chunk(size: int, seal_indices: list[int], target: int) -> list[tuple[int, int]]:
            return chunks(size, seal_indices, 2 * BLOCK_SIZE)

        monkeypatch.setattr(verify_module, "_chunks", two_blocks_per_chunk)
    if chosen.startswith("spawn"):
        monkeypatch.setattr(verify_module, "_start_method", lambda: "spawn")
    return chosen


def _verify(ledger: BuiltLedger, mode: str) -> VerifyReport:
    return verify_ledger(ledger.url, verifier=ledger.verifier, workers=1 if mode == "workers1" else 2)


@contextmanager
def _tampering(ledger: BuiltLedger) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(ledger.path)) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        yield db
        db.commit()


def _split_chunks(ledger: BuiltLedger) -> list[tuple[int, int]]:
    seals = [size - 1 for size in ledger.checkpoint_sizes]
    return verify_module._chunks(ledger.size, seals, 2 * BLOCK_SIZE)


def test_clean_ledger_in_every_mode(built_ledger: BuiltLedger, mode: str) -> None:
    report = _verify(built_ledger, mode)
    assert report.ok, report.problems
    assert report.verdicts == LEDGER_EVENTS
    assert report.envelopes == -(-LEDGER_EVENTS // 7)
    assert report.blocks == len(built_ledger.checkpoint_sizes)
    assert len(_split_chunks(built_ledger)) > 3  # the split modes really hand out several chunks


def test_chain_link_across_chunks(built_ledger: BuiltLedger, mode: str) -> None:
    """A token's last entry in one chunk and its next entry in the following chunk: forging the leaf column
    of the first breaks the link the second holds, which only the coordinator sees in the split modes."""
    second_chunk = _split_chunks(built_ledger)[1][0]
    at = [r.index for r in built_ledger.receipts]
    # events go round-robin over 5 tokens: events n and n + 5 are consecutive entries of one token
    n = max(k for k in range(LEDGER_EVENTS - 5) if at[k] < second_chunk <= at[k + 5])
    before, after = at[n], at[n + 5]
    with _tampering(built_ledger) as db:
        db.execute("UPDATE entries SET leaf = ? WHERE idx = ?", (hashlib.sha256(b"forged").digest(), before))
    report = _verify(built_ledger, mode)
    assert [p.index for p in report.problems if p.kind == "chain"] == [after]
    assert "entry_hash" in {p.kind for p in report.problems}
    assert report.first_bad_index == before


def test_envelope_of_a_later_chunk(built_ledger: BuiltLedger, mode: str) -> None:
    """An envelope whose events all lie in the last chunk is checked there (a worker's own keyring copy)."""
    last_chunk = _split_chunks(built_ledger)[-1][0]
    with _tampering(built_ledger) as db:
        digest, signature, first = db.execute(
            "SELECT digest, signature, first_idx FROM envelopes WHERE first_idx >= ? ORDER BY first_idx LIMIT 1",
            (last_chunk,),
        ).fetchone()
        forged = bytes([signature[0] ^ 1]) + signature[1:]
        db.execute("UPDATE envelopes SET signature = ? WHERE digest = ?", (forged, digest))
    report = _verify(built_ledger, mode)
    assert {p.kind for p in report.problems} == {"envelope"}
    assert [p.index for p in report.problems] == [first]


def test_an_event_the_model_rejects_is_not_judged(built_ledger: BuiltLedger, mode: str) -> None:
    """As before, a token event whose bytes the event model rejects is left out of the lifecycle replay (the
    chunk reports the entry); the other events of its chunk are still judged."""
    n = 203  # a USED event in the middle of the log
    index = built_ledger.receipts[n].index
    store = open_store(str(built_ledger.path), readonly=True)  # the canonical bytes, however they are kept
    try:
        body = store.entry(index).body
    finally:
        store.close()
    with _tampering(built_ledger) as db:
        assert body.count(b'"event_type":"USED"') == 1
        body = body.replace(b'"event_type":"USED"', b'"event_type":"USEX"')
        db.execute("UPDATE entries SET body = ?, leaf = ? WHERE idx = ?", (body, leaf_hash(body), index))
    report = _verify(built_ledger, mode)
    assert not report.ok
    assert report.verdicts == LEDGER_EVENTS - 1
    assert "verdict" not in {p.kind for p in report.problems}
    assert "envelope" in {p.kind for p in report.problems}
    assert report.first_bad_index == index


def test_start_method_is_fork_only_when_single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert verify_module._start_method() == "fork"
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert verify_module._start_method() == "spawn"
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert verify_module._start_method() == "spawn"


@pytest.mark.parametrize("mode", ["workers1", "workers2-split"], indirect=True)
def test_entries_past_a_long_gap_are_still_checked(built_ledger: BuiltLedger, mode: str) -> None:
    """A run of deleted entries is reported, and the chunk goes on past it (the stores page by rows, so a
    gap does not end a range: tests/store), so an entry forged after the gap is still named."""
    forged = 140
    with _tampering(built_ledger) as db:
        db.execute("DELETE FROM entries WHERE idx >= 100 AND idx < 130")
        db.execute("UPDATE entries SET leaf = ? WHERE idx = ?", (hashlib.sha256(b"forged").digest(), forged))
    report = _verify(built_ledger, mode)
    assert ("missing", 100) in {(p.kind, p.index) for p in report.problems}
    assert ("entry_hash", forged) in {(p.kind, p.index) for p in report.problems}
    assert report.first_bad_index == 100


def test_frozen_heap_sets_existing_objects_aside_and_back() -> None:
    assert gc.get_freeze_count() == 0
    with verify_module._frozen_heap():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    gc.freeze()  # someone else's frozen objects are theirs to unfreeze
    try:
        frozen = gc.get_freeze_count()
        # frozen objects freed meanwhile leave the count, so it may only fall a little: not to 0 (unfrozen by
        # _frozen_heap) and not above (frozen again)
        with verify_module._frozen_heap():
            assert 0 < gc.get_freeze_count() <= frozen
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()

"""The verifier's checks one by one (ledger.verification), each called on its own with the rows of a real
ledger: the right input passes, and each kind of wrong input gives that check's own problem."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lineage_ledger.core.entry import BLOCKS_SUBJECT, ZERO_HASH, KeyEntry, SealEntry, decode_entry, header_hash
from lineage_ledger.core.lifecycle import LifecyclePolicy
from lineage_ledger.core.model import TokenEvent
from lineage_ledger.core.note import NoteVerifier
from lineage_ledger.ledger.verification.blocks import BlockSpan, Seal, block_problems, header_chain_problem
from lineage_ledger.ledger.verification.chains import Chains
from lineage_ledger.ledger.verification.derived import revocation_problems
from lineage_ledger.ledger.verification.entries import (
    LEAN,
    LeanEventEntry,
    event_bytes,
    event_column_problem,
    event_in_envelope,
    own_column_problem,
    subject_and_parent,
)
from lineage_ledger.ledger.verification.log import check_checkpoint_roots, signed_checkpoints
from lineage_ledger.ledger.verification.report import VerifyReport
from lineage_ledger.ledger.verification.setup import meta_problems
from lineage_ledger.ledger.verification.verdicts import Verdicts, read_events
from lineage_ledger.store import open_store
from lineage_ledger.store.base import EntryRow, Store
from tests.conftest import BLOCK_SIZE, LOG_NAME, PRODUCER, BuiltLedger, token_event, token_id

T0 = 1_763_000_000_000_000_000
S = 1_000_000_000


@pytest.fixture
def store(pristine_ledger: BuiltLedger) -> Iterator[Store]:
    opened = open_store(pristine_ledger.url, readonly=True)
    try:
        yield opened
    finally:
        opened.close()


def _row(store: Store, index: int) -> EntryRow:
    (row,) = store.entries(index, index + 1)
    return row


def _event_entry(row: EntryRow) -> LeanEventEntry:
    entry = LEAN.decode(row.body)
    assert type(entry) is LeanEventEntry
    return entry


# -- entry checks --------------------------------------------------------------------------------------------


def test_event_bytes_are_the_producers_bytes(pristine_ledger: BuiltLedger, store: Store) -> None:
    for n in (0, 1, 200, len(pristine_ledger.events) - 1):
        row = _row(store, pristine_ledger.receipts[n].index)
        assert event_bytes(row.body) == pristine_ledger.events[n]


@pytest.mark.parametrize(
    "body",
    [b'{"envelop":"' + b"0" * 200, b'{"envelope":"00","event":{},"index":1}', b"[]"],
    ids=["another-first-field", "too-short", "not-an-object"],
)
def test_event_bytes_of_an_entry_not_laid_out_as_an_event_entry(body: bytes) -> None:
    assert event_bytes(body) is None


def test_event_columns(pristine_ledger: BuiltLedger, store: Store) -> None:
    row = _row(store, pristine_ledger.receipts[7].index)
    entry = _event_entry(row)
    derived = subject_and_parent(entry.event)
    assert derived == ("token:" + token_id("t-2"), None)
    columns = (row.subject, row.event_id, row.parent, row.verdict)
    assert event_column_problem(entry, row.index, derived, columns) is None
    forgeries: list[tuple[object, object, object, object]] = [
        ("token:" + token_id("t-3"), row.event_id, row.parent, row.verdict),
        (row.subject, "another-id", row.parent, row.verdict),
        (row.subject, row.event_id, "token:" + token_id("t-0"), row.verdict),
        (row.subject, row.event_id, row.parent, "x.y"),
    ]
    for changed in forgeries:
        found = event_column_problem(entry, row.index, derived, changed)
        assert found is not None
        assert (found.kind, found.index) == ("derived_column", row.index)


def test_an_event_against_its_envelope(pristine_ledger: BuiltLedger, store: Store) -> None:
    row = _row(store, pristine_ledger.receipts[9].index)  # the third event of the second batch of 7
    entry = _event_entry(row)
    raw = event_bytes(row.body)
    assert raw is not None
    envelope = store.envelope(bytes.fromhex(entry.envelope))
    signed = (envelope.event_leaves, envelope.producer, envelope.key_id)
    assert entry.position == 2
    assert event_in_envelope(signed, entry, raw)
    assert not event_in_envelope(signed, entry, pristine_ledger.events[8])  # another event of the batch
    assert not event_in_envelope((envelope.event_leaves, "someone-else", envelope.key_id), entry, raw)
    assert not event_in_envelope((envelope.event_leaves, envelope.producer, "another-key"), entry, raw)


def test_own_columns_of_a_key_entry(store: Store) -> None:
    (row,) = store.subjects_with_prefix("producer:")
    entry = decode_entry(row.body)
    assert isinstance(entry, KeyEntry)
    assert row.subject == "producer:" + PRODUCER
    assert own_column_problem(entry, row.index, row.subject, row.event_id, row.parent, row.verdict) is None
    for columns in [
        ("producer:other", None, None, "ok"),
        (row.subject, "an-id", None, "ok"),
        (row.subject, None, None, "x"),
    ]:
        found = own_column_problem(entry, row.index, *columns)
        assert found is not None
        assert (found.kind, found.index) == ("derived_column", row.index)
        assert found.message.startswith("key entry")


# -- block checks --------------------------------------------------------------------------------------------


def _first_block(store: Store) -> tuple[SealEntry, int, BlockSpan]:
    seal_row = store.subject_entries([BLOCKS_SUBJECT])[0]
    seal = decode_entry(seal_row.body)
    assert isinstance(seal, SealEntry)
    rows = list(store.entries(seal.block.first, seal_row.index))
    recorded = [decode_entry(r.body).recorded_at for r in rows]
    return seal, seal_row.index, BlockSpan(seal.block.first, [r.leaf for r in rows], recorded[0], recorded[-1])


def test_a_block_against_its_seal(store: Store) -> None:
    seal, idx, span = _first_block(store)
    assert idx == BLOCK_SIZE
    assert block_problems(seal, idx, span, None) == []


def test_a_block_whose_entries_differ_from_its_seal(store: Store) -> None:
    seal, idx, span = _first_block(store)
    changed = BlockSpan(span.first, [*span.leaves[:3], bytes(32), *span.leaves[4:]], span.hlc_first, span.hlc_last)
    assert [(p.kind, p.index, p.block) for p in block_problems(seal, idx, changed, None)] == [("block", idx, 0)]
    # a bad entry already found inside the block explains the root: the problem names it
    assert [p.index for p in block_problems(seal, idx, changed, 3)] == [3]
    shorter = BlockSpan(1, span.leaves[1:], span.hlc_first, span.hlc_last)
    assert {p.message.split(": ")[1].split(" ")[0] for p in block_problems(seal, idx, shorter, None)} == {
        "covers",
        "root",
    }
    later = BlockSpan(span.first, span.leaves, span.hlc_first, span.hlc_last + "0")
    assert ["HLC" in p.message for p in block_problems(seal, idx, later, None)] == [True]


def test_the_chain_of_block_headers(store: Store) -> None:
    first, second = [decode_entry(r.body) for r in store.subject_entries([BLOCKS_SUBJECT])[:2]]
    assert isinstance(first, SealEntry)
    assert isinstance(second, SealEntry)
    h = second.block
    seal = Seal(2 * BLOCK_SIZE + 1, h.number, h.prev_header, header_hash(h), h.subjects_root, {})
    assert header_chain_problem(seal, 1, header_hash(first.block)) is None
    assert header_chain_problem(seal, 2, header_hash(first.block)) is not None  # a block left out
    found = header_chain_problem(seal, 1, ZERO_HASH)  # the previous header is another
    assert found is not None
    assert (found.kind, found.index, found.block) == ("block", seal.index, 1)


# -- chain checks --------------------------------------------------------------------------------------------


def test_chains_across_chunks() -> None:
    a, b, c = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
    chains = Chains()
    chains.absorb({"token:x": (0, ZERO_HASH), "token:y": (1, ZERO_HASH)}, {"token:x": a, "token:y": b}, [])
    chains.absorb({"token:x": (5, a), "token:y": (6, c), "token:z": (7, c)}, {}, [(4, "token:w")])
    assert [(p.kind, p.index) for p in chains.problems()] == [("chain", 4), ("chain", 6), ("chain", 7)]


# -- verdict checks ------------------------------------------------------------------------------------------


def test_read_events_leaves_out_what_the_event_model_rejects() -> None:
    good = token_event("ISSUED", token_id("read-1"), T0, user_id="alice")
    bad = good.replace(b'"ISSUED"', b'"ISSUEX"')
    events = read_events(b"[" + b",".join([good, bad, b"{", good]) + b"]", [len(good), len(bad), 1, len(good)])
    assert [type(e) for e in events] == [TokenEvent, type(None), type(None), TokenEvent]


def test_verdicts_judge_the_token_events_again() -> None:
    tok = token_id("judged")
    events = [
        token_event("ISSUED", tok, T0, user_id="alice"),
        token_event("REVOKED", tok, T0 + S, reason="stolen"),
        token_event("USED", tok, T0 + 2 * S, resource="/v1/payroll", outcome="ALLOW"),
    ]
    verdicts = Verdicts(LifecyclePolicy(), None)
    verdicts.absorb([10, 11, 12], ["ok", "ok", "ok"], b"[" + b",".join(events) + b"]", [len(e) for e in events])
    assert verdicts.judged == 3
    assert [(p.kind, p.index) for p in verdicts.problems] == [("verdict", 12)]
    assert verdicts.revoked == {"token:" + tok: 11}


# -- derived-index checks ------------------------------------------------------------------------------------


def test_revocation_set() -> None:
    assert revocation_problems({"token:a": 5}, [("token:a", 5)], 10, 10) == []
    assert revocation_problems({"token:a": 5}, [("token:a", 5), ("token:b", 11)], 10, 12) == []  # appended since
    assert [p.index for p in revocation_problems({"token:a": 5}, [("token:a", 6)], 10, 10)] == [5]
    assert [p.index for p in revocation_problems({"token:a": 5}, [], 10, 10)] == [5]
    assert [p.message for p in revocation_problems({}, [("token:b", 3)], 10, 10)] == [
        "token:b: the revocation set says entry 3; no entry revokes it"
    ]


# -- setup and log checks ------------------------------------------------------------------------------------


def test_meta_problems(store: Store) -> None:
    meta = store.meta()
    assert meta_problems(meta) == []
    assert [p.message for p in meta_problems({})] == ["the store holds no ledger"]
    assert [p.kind for p in meta_problems({**meta, "format": "another"})] == ["meta"]
    assert "verifier key copy" in meta_problems({**meta, "verifier_key": "not a key"})[0].message


def test_checkpoints_signed_and_rooted(pristine_ledger: BuiltLedger, store: Store) -> None:
    rows = store.checkpoints()
    key = pristine_ledger.verifier

    def signing_key(_size: int) -> NoteVerifier:
        return key

    signed, problems = signed_checkpoints(rows, signing_key, LOG_NAME, pristine_ledger.size)
    assert problems == []
    assert [cp.size for cp in signed] == list(pristine_ledger.checkpoint_sizes)
    _, problems = signed_checkpoints(rows, signing_key, "another/log", pristine_ledger.size)
    assert {p.kind for p in problems} == {"checkpoint"}
    shorter = pristine_ledger.checkpoint_sizes[-1] - 1
    _, problems = signed_checkpoints(rows, signing_key, LOG_NAME, shorter)
    assert [(p.kind, p.index) for p in problems] == [("truncation", shorter)]

    report = VerifyReport(url=pristine_ledger.url)
    roots = {cp.size: cp.root_hash for cp in signed}
    check_checkpoint_roots(signed, None, roots, report)
    assert report.ok
    roots[signed[1].size] = bytes(32)
    check_checkpoint_roots(signed, None, roots, report)
    assert [(p.kind, p.index) for p in report.problems] == [("checkpoint_root", signed[1].size - 1)]

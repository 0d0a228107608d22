"""verify_ledger against an attacker who can rewrite the SQLite file: every kind of tampering is caught.

Each attack opens the database with sqlite3, drops the append-only triggers (anyone with the file can) and
rewrites rows. Every check runs three ways: ``workers=1``; ``workers=2`` as called (a ledger this small is
one chunk, so this is the in-process path); and ``workers=2`` with the log split into chunks of two blocks,
so the spawned workers and the coordinator's merge of their results are exercised too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import uuid_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage_ledger.cli.main import main
from lineage_ledger.core import smt
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.entry import BLOCKS_SUBJECT, ZERO_HASH, EventEntry, decode_entry, event_entry_bytes
from lineage_ledger.core.envelope import open_envelope, seal_batch
from lineage_ledger.core.hlc import format_reading, parse_reading
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.note import open_note, sign_note, verifier_key
from lineage_ledger.core.receipt import SignedPromise, sign_promise
from lineage_ledger.ledger import verify as verify_module
from lineage_ledger.ledger.completeness import decode_node
from lineage_ledger.ledger.verify import VerifyReport, verify_ledger
from lineage_ledger.store import sqlite as sqlite_store
from tests.conftest import (
    BLOCK_SIZE,
    LEDGER_EVENTS,
    LOG_NAME,
    PRODUCER,
    PRODUCER_KEY_ID,
    BuiltLedger,
    build_ledger,
    token_event,
    token_id,
)

MODES = ("workers1", "workers2", "workers2-split")


class Verifier:
    """verify_ledger in one of MODES, with the log's true key unless told otherwise."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(
        self,
        ledger: BuiltLedger,
        *,
        trusted_checkpoint: str | None = None,
        use_stored_key: bool = False,
    ) -> VerifyReport:
        key = None if use_stored_key else ledger.verifier
        workers = 1 if self.mode == "workers1" else 2
        return verify_ledger(ledger.url, verifier=key, trusted_checkpoint=trusted_checkpoint, workers=workers)


@pytest.fixture(params=MODES)
def verify(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Verifier:
    mode: str = request.param
    if mode == "workers2-split":
        chunks = verify_module._chunks

        def two_blocks_per_chunk(size: int, seal_indices: list[int], target: int) -> list[tuple[int, int]]:
            # The production target (50 000 entries per chunk) would need a ledger too big for a unit test.
            return chunks(size, seal_indices, 2 * BLOCK_SIZE)

        monkeypatch.setattr(verify_module, "_chunks", two_blocks_per_chunk)
    return Verifier(mode)


@pytest.fixture(scope="module")
def pristine_ledger(tmp_path_factory: pytest.TempPathFactory) -> BuiltLedger:
    """The attacks below rewrite entries' canonical bytes in place, so their ledger keeps them as they are:
    store layout 1 (every column of layout 2 is changed in tests/ledger/test_verify_columns.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_store, "SCHEMA_VERSION", 1)
        return build_ledger(tmp_path_factory.mktemp("pristine-layout-1") / "ledger.db")


# -- the attacker -------------------------------------------------------------------------------------------


@contextmanager
def tampering(ledger: BuiltLedger) -> Iterator[sqlite3.Connection]:
    """A raw connection to the ledger file with the append-only triggers dropped; commits on exit."""
    db = sqlite3.connect(ledger.path)
    try:
        triggers = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        assert triggers, "the store should protect its tables with triggers"
        for name in triggers:
            db.execute(f'DROP TRIGGER "{name}"')
        yield db
        db.commit()
    finally:
        db.close()


def body_at(db: sqlite3.Connection, index: int) -> bytes:
    row = db.execute("SELECT body FROM entries WHERE idx = ?", (index,)).fetchone()
    assert row is not None
    body: bytes = row[0]
    return body


def flip_byte(data: bytes, position: int, mask: int = 0x01) -> bytes:
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]


def kinds(report: VerifyReport) -> set[str]:
    return {p.kind for p in report.problems}


def event_index(ledger: BuiltLedger, n: int) -> int:
    """The log index of the n-th event the fixture appended."""
    return ledger.receipts[n].index


def block_of(ledger: BuiltLedger, index: int) -> tuple[int, int, int]:
    """(number, first index, seal index) of the block holding ``index``: every seal signs a checkpoint."""
    first = 0
    for number, size in enumerate(ledger.checkpoint_sizes):
        if index < size:
            return number, first, size - 1
        first = size
    raise AssertionError(f"{index} is not sealed")


def next_of_same_token(ledger: BuiltLedger, n: int) -> int:
    """Index of the next event of event n's token (events are spread round-robin over 5 tokens)."""
    return event_index(ledger, n + 5)


def latest_note(ledger: BuiltLedger) -> str:
    with closing(sqlite3.connect(ledger.path)) as db:
        row = db.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    note: str = row[0]
    return note


# A USED event in the middle of a block: its token has events before and after it.
TARGET = 200
assert TARGET % 5 == 0
assert 5 < TARGET < LEDGER_EVENTS - 5


def test_fixture_layout(built_ledger: BuiltLedger) -> None:
    """The attacks below rely on this shape: several blocks, a target inside one, stored level-8 nodes."""
    assert len(built_ledger.checkpoint_sizes) >= 5
    assert built_ledger.size > 512
    index = event_index(built_ledger, TARGET)
    _, first, seal = block_of(built_ledger, index)
    assert first < index < seal
    with closing(sqlite3.connect(built_ledger.path)) as db:
        nodes = db.execute("SELECT level, idx FROM nodes ORDER BY level, idx").fetchall()
    assert nodes == [(8, 0), (8, 1)]


# -- a clean ledger -----------------------------------------------------------------------------------------


def test_clean_ledger_verifies(built_ledger: BuiltLedger, verify: Verifier) -> None:
    report = verify(built_ledger)
    assert report.ok, report.problems
    assert report.first_bad_index is None
    assert report.size == built_ledger.size
    assert report.blocks == report.checkpoints == len(built_ledger.checkpoint_sizes)
    assert report.envelopes == -(-LEDGER_EVENTS // 7)  # one envelope per batch of 7
    assert report.key_source == "given"
    assert report.chains_checked


def test_clean_ledger_verifies_with_the_stored_key_and_says_so(built_ledger: BuiltLedger) -> None:
    report = verify_ledger(built_ledger.url, workers=1)
    assert report.ok, report.problems
    assert "database copy" in report.key_source


def test_clean_ledger_verifies_through_the_cli(built_ledger: BuiltLedger, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify", "--ledger", built_ledger.url, "--key", str(built_ledger.verifier), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert shown["ok"] is True
    assert shown["first_bad_index"] is None
    assert shown["size"] == built_ledger.size
    assert shown["key_source"] == "given"


# -- entry bytes and columns ------------------------------------------------------------------------------


def _rewrite_event(body: bytes) -> bytes:
    old = f'"resource":"/v1/orders/{TARGET}"'.encode()
    assert body.count(old) == 1
    return body.replace(old, f'"resource":"/v1/admin/{TARGET}"'.encode())


def test_modified_entry_bytes(built_ledger: BuiltLedger, verify: Verifier) -> None:
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        db.execute("UPDATE entries SET body = ? WHERE idx = ?", (_rewrite_event(body_at(db, index)), index))
    report = verify(built_ledger)
    assert not report.ok
    assert "entry_hash" in kinds(report)
    assert report.first_bad_index == index


def test_modified_entry_with_recomputed_leaf(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """The stored hash now matches the bytes; the signed envelope, the chain and the checkpoints do not."""
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        body = _rewrite_event(body_at(db, index))
        db.execute("UPDATE entries SET body = ?, leaf = ? WHERE idx = ?", (body, leaf_hash(body), index))
    report = verify(built_ledger)
    assert not report.ok
    assert {"checkpoint_root", "chain", "envelope"} <= kinds(report)
    assert "entry_hash" not in kinds(report)
    chain_breaks = [p.index for p in report.problems if p.kind == "chain"]
    assert chain_breaks == [next_of_same_token(built_ledger, TARGET)]
    assert report.first_bad_index == index


def test_rewritten_verdict_is_localised_to_its_block(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """Hiding a violation: the verdict in the bytes and the column, and the leaf, all rewritten together.

    Nothing signed covers a verdict alone, so no check can name the entry itself: the block root, the next
    link of the token's chain and the checkpoints disagree, and the report points inside the tampered block.
    """
    index = event_index(built_ledger, TARGET)
    number, first, seal = block_of(built_ledger, index)
    with tampering(built_ledger) as db:
        body = body_at(db, index)
        assert body.count(b'"verdict":"ok"') == 1
        body = body.replace(b'"verdict":"ok"', b'"verdict":"token.use_after_revoke"')
        db.execute(
            "UPDATE entries SET body = ?, leaf = ?, verdict = ? WHERE idx = ?",
            (body, leaf_hash(body), "token.use_after_revoke", index),
        )
    report = verify(built_ledger)
    assert not report.ok
    assert {"block", "chain", "checkpoint_root"} <= kinds(report)
    assert {(p.block, first <= (p.index or -1) <= seal) for p in report.problems if p.kind == "block"} == {
        (number, True)
    }
    assert report.first_bad_index is not None
    assert first <= report.first_bad_index <= seal


DERIVED_COLUMNS: dict[str, tuple[object, str]] = {
    "subject": ("token:" + token_id("intruder"), "derived_column"),
    "prev": (b"\xab" * 32, "derived_column"),
    "verdict": ("token.use_after_revoke", "derived_column"),
    "event_id": (str(uuid_utils.uuid7()), "derived_column"),
    "parent": ("token:" + token_id("intruder"), "derived_column"),
    "leaf": (hashlib.sha256(b"forged").digest(), "entry_hash"),
}


@pytest.mark.parametrize("column", sorted(DERIVED_COLUMNS))
def test_changed_derived_column(built_ledger: BuiltLedger, verify: Verifier, column: str) -> None:
    value, kind = DERIVED_COLUMNS[column]
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        db.execute(f"UPDATE entries SET {column} = ? WHERE idx = ?", (value, index))
    report = verify(built_ledger)
    assert not report.ok
    assert kind in kinds(report)
    assert report.first_bad_index == index


def test_deleted_middle_row(built_ledger: BuiltLedger, verify: Verifier) -> None:
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        db.execute("DELETE FROM entries WHERE idx = ?", (index,))
    report = verify(built_ledger)
    assert not report.ok
    assert {"missing", "chain"} <= kinds(report)
    assert report.first_bad_index == index


def test_a_reading_spoilt_into_a_non_number_is_reported_not_a_crash(
    built_ledger: BuiltLedger, verify: Verifier
) -> None:
    index = event_index(built_ledger, 0)  # an ISSUED event: the rules read its occurred_at as a number
    with tampering(built_ledger) as db:
        body = body_at(db, index)
        at = body.index(b'"occurred_at":"') + len(b'"occurred_at":"')
        db.execute("UPDATE entries SET body = ? WHERE idx = ?", (body[:at] + b"x" + body[at + 1 :], index))
    report = verify(built_ledger)
    assert not report.ok
    assert report.first_bad_index == index


def test_row_slipped_in_below_index_zero(built_ledger: BuiltLedger, verify: Verifier) -> None:
    # outside the log (sizes count from 0), so no chunk reads it: verify still reports it
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        db.execute(
            "INSERT INTO entries SELECT -5, subject, event_id || '-copy', parent, prev, leaf, verdict, body "
            "FROM entries WHERE idx = ?",
            (index,),
        )
    report = verify(built_ledger)
    assert not report.ok
    assert kinds(report) == {"insertion"}
    assert report.first_bad_index == -5


def test_swapped_rows(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """Reordering: two entries trade places, every column but the index going along with the bytes."""
    a, b = event_index(built_ledger, 100), event_index(built_ledger, 103)
    columns = "subject, event_id, parent, prev, leaf, verdict, body"
    with tampering(built_ledger) as db:
        row_a = db.execute(f"SELECT {columns} FROM entries WHERE idx = ?", (a,)).fetchone()
        row_b = db.execute(f"SELECT {columns} FROM entries WHERE idx = ?", (b,)).fetchone()
        db.execute("UPDATE entries SET event_id = NULL WHERE idx IN (?, ?)", (a, b))
        assignments = ", ".join(f"{c.strip()} = ?" for c in columns.split(","))
        db.execute(f"UPDATE entries SET {assignments} WHERE idx = ?", (*row_b, a))
        db.execute(f"UPDATE entries SET {assignments} WHERE idx = ?", (*row_a, b))
    report = verify(built_ledger)
    assert not report.ok
    assert [p.index for p in report.problems if p.kind == "position"] == [a, b]  # problems come sorted by index
    assert report.first_bad_index == a


# -- truncation and forged appends -------------------------------------------------------------------------


def _truncate(built_ledger: BuiltLedger, keep: int, *, with_checkpoints: bool, derived: bool = True) -> None:
    """Remove entries from ``keep`` on; optionally also the checkpoints and tree nodes that cover them, and
    (unless told otherwise) the rows the store derived from the removed entries, as a thorough attacker would."""
    with tampering(built_ledger) as db:
        db.execute("DELETE FROM entries WHERE idx >= ?", (keep,))
        if with_checkpoints:
            db.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
            db.execute("DELETE FROM nodes WHERE (idx + 1) << level > ?", (keep,))
            if derived:
                for table in ("links", "revocations", "subject_index"):
                    db.execute(f"DELETE FROM {table} WHERE idx >= ?", (keep,))
                db.execute("DELETE FROM promises WHERE first >= ?", (keep,))
                db.execute("DELETE FROM envelopes WHERE first_idx >= ?", (keep,))


def test_truncation_with_its_checkpoints_is_caught_only_by_a_trusted_checkpoint(
    built_ledger: BuiltLedger, verify: Verifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = latest_note(built_ledger)  # an auditor kept the latest checkpoint before the attack
    keep = built_ledger.checkpoint_sizes[-3]
    _truncate(built_ledger, keep, with_checkpoints=True)

    # The shorter log is internally consistent: without an outside checkpoint nothing can tell.
    alone = verify(built_ledger)
    assert alone.ok, alone.problems
    assert alone.size == keep

    report = verify(built_ledger, trusted_checkpoint=saved)
    assert not report.ok
    assert "truncation" in kinds(report)
    assert report.trusted_size == built_ledger.size
    assert report.first_bad_index == keep  # the first index the ledger no longer holds

    note_file = tmp_path / "saved.checkpoint"
    note_file.write_text(saved, "utf-8")
    args = ["verify", "--ledger", built_ledger.url, "--key", str(built_ledger.verifier), "--json"]
    code = main([*args, "--trusted-checkpoint", str(note_file)])
    shown = json.loads(capsys.readouterr().out)
    assert code == 1
    assert shown["ok"] is False
    assert shown["first_bad_index"] == keep


def test_truncation_leaving_the_derived_rows_is_caught_without_a_trusted_checkpoint(
    built_ledger: BuiltLedger, verify: Verifier
) -> None:
    keep = built_ledger.checkpoint_sizes[-3]
    _truncate(built_ledger, keep, with_checkpoints=True, derived=False)
    report = verify(built_ledger)
    assert not report.ok
    # the links and revocations of the removed entries name entries the log no longer holds, and their
    # envelopes are named by no entry
    assert kinds(report) == {"envelope", "links", "revocations"}
    assert report.size == keep


def test_trusted_checkpoint_of_an_intact_ledger_passes(built_ledger: BuiltLedger, verify: Verifier) -> None:
    report = verify(built_ledger, trusted_checkpoint=latest_note(built_ledger))
    assert report.ok, report.problems
    assert report.trusted_size == built_ledger.size


def test_truncation_leaving_checkpoints_is_caught(built_ledger: BuiltLedger, verify: Verifier) -> None:
    keep = built_ledger.checkpoint_sizes[-3] + 10
    _truncate(built_ledger, keep, with_checkpoints=False)
    report = verify(built_ledger)
    assert not report.ok
    assert "truncation" in kinds(report)
    assert report.size == keep
    assert report.first_bad_index == keep


def test_forged_row_appended(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """An attacker without the producer key appends an event in a batch signed by a key of its own."""
    index = built_ledger.size
    attacker = Ed25519Signer.generate(PRODUCER)
    event = token_event("ISSUED", token_id("forged"), parse_reading(_last_recorded(built_ledger)).physical_ns)
    opened = open_envelope(seal_batch([event], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=attacker))
    last = parse_reading(_last_recorded(built_ledger))
    body = event_entry_bytes(
        index=index,
        recorded_at=format_reading(last.physical_ns, last.counter + 1),
        prev=ZERO_HASH,
        producer=PRODUCER,
        key_id=PRODUCER_KEY_ID,
        envelope=opened.digest,
        position=0,
        verdict="ok",
        event=event,
    )
    entry = decode_entry(body)
    assert isinstance(entry, EventEntry)
    entry_event_id = json.loads(bytes(entry.event))["event_id"]
    with tampering(built_ledger) as db:
        db.execute(
            "INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?, ?)",
            (opened.digest, PRODUCER, PRODUCER_KEY_ID, opened.payload, opened.signature, opened.event_leaves[0], index),
        )
        db.execute(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (index, "token:" + token_id("forged"), entry_event_id, None, ZERO_HASH, leaf_hash(body), "ok", body),
        )
    report = verify(built_ledger)
    assert not report.ok
    assert report.size == index + 1
    assert "envelope" in kinds(report)
    assert report.first_bad_index == index


def _last_recorded(ledger: BuiltLedger) -> str:
    with closing(sqlite3.connect(ledger.path)) as db:
        body = db.execute("SELECT body FROM entries ORDER BY idx DESC LIMIT 1").fetchone()[0]
    return decode_entry(body).recorded_at


# -- tree nodes, checkpoints, envelopes, keys -------------------------------------------------------------


# -- derived indexes: lineage links and the revocation set ---------------------------------------------------


def _link_of(db: sqlite3.Connection, index: int) -> tuple[str, str, str, int, str]:
    rows = db.execute("SELECT kind, key, at, idx, subject FROM links WHERE idx = ?", (index,)).fetchall()
    assert len(rows) == 1
    kind, key, at, idx, subject = rows[0]
    return kind, key, at, idx, subject


def _assert_links_problem_at(report: VerifyReport, verify: Verifier, index: int) -> None:
    assert kinds(report) == {"links"}, report.problems
    first = report.first_bad_index
    assert first is not None
    assert first <= index
    if verify.mode == "workers2-split":  # chunks of two blocks: the one reported holds the index
        assert first > index - 2 * (BLOCK_SIZE + 1)


def test_removed_link_is_caught_in_its_chunk(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """Removing a use from the links table would drop the token from "who used this resource" answers."""
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        assert _link_of(db, index)[:2] == ("resource", f"/v1/orders/{TARGET}")
        db.execute("DELETE FROM links WHERE idx = ?", (index,))
    _assert_links_problem_at(verify(built_ledger), verify, index)


def test_redirected_link_is_caught(built_ledger: BuiltLedger, verify: Verifier) -> None:
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        db.execute("UPDATE links SET key = '/v1/orders/elsewhere' WHERE idx = ?", (index,))
    _assert_links_problem_at(verify(built_ledger), verify, index)


def test_forged_link_is_caught(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """A row claiming the entry's token also used another resource."""
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        kind, _, at, idx, subject = _link_of(db, index)
        db.execute("INSERT INTO links VALUES (?, ?, ?, ?, ?)", (kind, "/admin/keys", at, idx, subject))
    _assert_links_problem_at(verify(built_ledger), verify, index)


def test_link_to_an_entry_beyond_the_log_is_caught(built_ledger: BuiltLedger, verify: Verifier) -> None:
    index = event_index(built_ledger, TARGET)
    with tampering(built_ledger) as db:
        kind, key, at, _, subject = _link_of(db, index)
        db.execute("INSERT INTO links VALUES (?, ?, ?, ?, ?)", (kind, key, at, built_ledger.size + 10, subject))
    report = verify(built_ledger)
    assert kinds(report) == {"links"}
    assert "forged" in report.problems[0].message


def test_rewritten_revocation_set_is_caught(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """A revoked token taken out of the revocation set, and one that was never revoked put in."""
    with tampering(built_ledger) as db:
        subject, idx = db.execute("SELECT subject, idx FROM revocations ORDER BY idx LIMIT 1").fetchone()
        db.execute("DELETE FROM revocations WHERE subject = ?", (subject,))
        db.execute("INSERT INTO revocations VALUES (?, ?)", ("token:" + token_id("never-revoked"), idx))
    report = verify(built_ledger)
    assert kinds(report) == {"revocations"}
    messages = sorted(p.message for p in report.problems)
    assert len(messages) == 2
    assert any(m.startswith(f"{subject}: the revocation set does not hold it; entry {idx}") for m in messages)
    assert any("no entry revokes it" in m for m in messages)


@pytest.fixture
def indexed_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BuiltLedger:
    """A ledger whose SQLite subject index holds sorted runs (runs of 64 entries instead of 32,768)."""
    monkeypatch.setattr(sqlite_store, "SUBJECT_RUN", 64)
    ledger = build_ledger(tmp_path / "indexed.db", events=300)
    with closing(sqlite3.connect(ledger.path)) as db:
        mark = db.execute("SELECT max(through) FROM subject_index_mark").fetchone()[0]
        rows = db.execute("SELECT count(*) FROM subject_index").fetchone()[0]
    assert mark >= 128
    assert rows >= mark
    return ledger


def test_ledger_with_subject_runs_verifies(indexed_ledger: BuiltLedger, verify: Verifier) -> None:
    report = verify(indexed_ledger)
    assert report.ok, report.problems


def test_removed_subject_index_row_is_caught(indexed_ledger: BuiltLedger, verify: Verifier) -> None:
    """A timeline read through the index would silently miss the entry."""
    index = event_index(indexed_ledger, 60)
    with tampering(indexed_ledger) as db:
        assert db.execute("DELETE FROM subject_index WHERE idx = ?", (index,)).rowcount == 1
    report = verify(indexed_ledger)
    assert kinds(report) == {"subject_index"}
    first = report.first_bad_index
    assert first is not None
    assert first <= index


def test_forged_subject_index_row_is_caught(indexed_ledger: BuiltLedger, verify: Verifier) -> None:
    """An entry listed under a token it does not belong to."""
    index = event_index(indexed_ledger, 60)
    with tampering(indexed_ledger) as db:
        db.execute("INSERT INTO subject_index VALUES (?, ?)", ("token:" + token_id("someone-else"), index))
    report = verify(indexed_ledger)
    assert kinds(report) == {"subject_index"}


def test_tampered_tree_node(built_ledger: BuiltLedger, verify: Verifier) -> None:
    with tampering(built_ledger) as db:
        stored = db.execute("SELECT hash FROM nodes WHERE level = 8 AND idx = 1").fetchone()[0]
        db.execute("UPDATE nodes SET hash = ? WHERE level = 8 AND idx = 1", (flip_byte(stored, 0),))
    report = verify(built_ledger)
    assert not report.ok
    assert kinds(report) == {"tree_node"}
    assert report.first_bad_index == 1 << 8  # the first leaf under node (8, 1)


def test_tampered_checkpoint_signature(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """A checkpoint is not an entry: the problem names the checkpoint, and no entry index."""
    size = built_ledger.checkpoint_sizes[2]
    with tampering(built_ledger) as db:
        note: str = db.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()[0]
        text, signature_line = note.rsplit("\n\n", 1)
        prefix, encoded = signature_line.rstrip("\n").rsplit(" ", 1)
        raw = base64.b64decode(encoded)
        forged = f"{text}\n\n{prefix} {base64.b64encode(flip_byte(raw, 10)).decode()}\n"
        db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (forged, size))
    report = verify(built_ledger)
    assert not report.ok
    assert kinds(report) == {"checkpoint"}
    assert [f"checkpoint {size}:" in p.message for p in report.problems] == [True]
    assert report.first_bad_index is None


@pytest.mark.parametrize("column", ["signature", "payload", "event_leaves"])
def test_tampered_envelope(built_ledger: BuiltLedger, verify: Verifier, column: str) -> None:
    first = event_index(built_ledger, 140)  # the first event of the 21st batch
    with tampering(built_ledger) as db:
        digest, value = db.execute(
            f"SELECT digest, {column} FROM envelopes WHERE first_idx = ?",
            (first,),
        ).fetchone()
        db.execute(
            f"UPDATE envelopes SET {column} = ? WHERE digest = ?",
            (flip_byte(value, len(value) // 2), digest),
        )
    report = verify(built_ledger)
    assert not report.ok
    assert "envelope" in kinds(report)
    assert report.first_bad_index == first


def test_replaced_verifier_key_copy(
    built_ledger: BuiltLedger, verify: Verifier, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker puts its own log key in the database and re-signs every checkpoint with it."""
    impostor = Ed25519Signer.generate(LOG_NAME)
    with tampering(built_ledger) as db:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'verifier_key'", (verifier_key(impostor.name, impostor.public_key),)
        )
        for size, note in db.execute("SELECT size, note FROM checkpoints").fetchall():
            text, _ = open_note(note, [built_ledger.verifier])
            db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (sign_note(text, [impostor]), size))
        for first, promise in db.execute("SELECT first, promise FROM promises").fetchall():
            resigned = sign_promise(SignedPromise.from_json(promise).promise(), impostor).to_bytes()
            db.execute("UPDATE promises SET promise = ? WHERE first = ?", (resigned, first))

    # Against the database's own copy the ledger is consistent: that is why the report names the key source.
    trusting = verify(built_ledger, use_stored_key=True)
    assert trusting.ok, trusting.problems
    assert "database copy" in trusting.key_source

    report = verify(built_ledger)
    assert not report.ok
    assert kinds(report) == {"meta", "checkpoint"}
    assert report.first_bad_index is None  # no entry was altered

    code = main(["verify", "--ledger", built_ledger.url, "--key", str(built_ledger.verifier), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 1
    assert {p["kind"] for p in shown["problems"]} == {"meta", "checkpoint"}


# -- any single flipped byte -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_flipped_byte_is_caught_at_its_index(pristine_ledger: BuiltLedger, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, pristine_ledger.size - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    with tempfile.TemporaryDirectory() as tmp:
        ledger = pristine_ledger.copy_to(Path(tmp) / "ledger.db")
        with tampering(ledger) as db:
            body = body_at(db, index)
            position = data.draw(st.integers(0, len(body) - 1), label="position")
            db.execute("UPDATE entries SET body = ? WHERE idx = ?", (flip_byte(body, position, mask), index))
        for workers in (1, 2):
            report = verify_ledger(ledger.url, verifier=ledger.verifier, workers=workers)
            assert not report.ok
            assert report.first_bad_index == index, report.problems


# -- the stored subject map -----------------------------------------------------------------------------------


def _stored_map(db: sqlite3.Connection) -> tuple[bytes, list[bytes], list[bytes]]:
    """The newest seal's map root, and the interior nodes and leaves reachable from it, as stored."""
    seals = db.execute("SELECT body FROM entries WHERE subject = ? ORDER BY idx", (BLOCKS_SUBJECT,))
    bodies = [row[0] for row in seals]
    root = bytes.fromhex(json.loads(bodies[-1])["block"]["subjects_root"])
    interiors: list[bytes] = []
    leaves: list[bytes] = []
    frontier = [root]
    while frontier:
        below: list[bytes] = []
        for digest in frontier:
            (data,) = db.execute("SELECT node FROM map_nodes WHERE hash = ?", (digest,)).fetchone()
            node = decode_node(data)
            if isinstance(node, smt.Interior):
                interiors.append(digest)
                below.extend(child for child in (node.left, node.right) if child != smt.EMPTY)
            else:
                leaves.append(digest)
        frontier = below
    return root, interiors, leaves


def test_the_stored_subject_map_is_walked_whole(built_ledger: BuiltLedger, verify: Verifier) -> None:
    with closing(sqlite3.connect(built_ledger.path)) as db:
        _, interiors, leaves = _stored_map(db)
    report = verify(built_ledger)
    assert report.ok, report.problems
    assert report.map_nodes == len(interiors) + len(leaves)
    assert len(leaves) == 5 + 1  # the fixture's five tokens and its producer's key chain


def test_a_missing_subject_map_node_is_caught(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """Completeness proofs for the tokens under that node could no longer be made."""
    with tampering(built_ledger) as db:
        _, interiors, _ = _stored_map(db)
        gone = interiors[-1]
        db.execute("DELETE FROM map_nodes WHERE hash = ?", (gone,))
    report = verify(built_ledger)
    assert kinds(report) == {"map_node"}, report.problems
    assert report.problems[0].message == f"subject-map node {gone.hex()} is missing"


def test_a_rewritten_subject_map_leaf_is_caught(built_ledger: BuiltLedger, verify: Verifier) -> None:
    """A leaf naming another chain head (a proof of another history) no longer hashes to its name."""
    with tampering(built_ledger) as db:
        _, _, leaves = _stored_map(db)
        (data,) = db.execute("SELECT node FROM map_nodes WHERE hash = ?", (leaves[0],)).fetchone()
        db.execute("UPDATE map_nodes SET node = ? WHERE hash = ?", (flip_byte(data, 40), leaves[0]))
    report = verify(built_ledger)
    assert kinds(report) == {"map_node"}, report.problems
    assert "does not hash to its name" in report.problems[0].message

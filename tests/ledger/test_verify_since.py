"""``verify_since``: the entries appended after a trusted checkpoint, checked without the history before it.

The ledger is the demo workload (token families with refreshes and rotations, assets with inputs, a policy),
appended in two halves: the checkpoint signed after the first half is the trusted one. A token is revoked
before that checkpoint and used after it, so one verdict after the cut depends on the state before it.
Tampering is done as in test_verify_tamper: sqlite3 on the file, with the append-only triggers dropped.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.entry import BLOCKS_SUBJECT, SealEntry, decode_entry
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.note import NoteVerifier, sign_note
from lineage_ledger.errors import InputError
from lineage_ledger.ledger.verification import since as since_module
from lineage_ledger.ledger.verify import verify_ledger, verify_since
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import sqlite as sqlite_store
from lineage_ledger.workload import PRODUCERS, batches, generate
from tests.conftest import LOG_NAME, make_log_signer, token_event, token_id

T0 = 1_763_000_000_000_000_000
SETTINGS = LedgerSettings(block_size=60, block_seconds=1e9)
REVOKED_TOKEN = token_id("revoked-before-the-cut")


@dataclass(frozen=True)
class Built:
    path: Path
    verifier: NoteVerifier
    note: str
    """The checkpoint signed after the first half: the trusted one."""
    trusted_size: int
    size: int
    first_half: Path
    """A copy of the ledger as it was when the trusted checkpoint was signed."""


def _signers() -> tuple[dict[str, Ed25519Signer], dict[str, str]]:
    signers = {p: Ed25519Signer(p, p.encode().ljust(32, b".")[:32]) for p in PRODUCERS}
    return signers, {p: f"{p}-1" for p in PRODUCERS}


def _build(path: Path, seed: int = 7) -> Built:
    signers, key_ids = _signers()
    envelopes = list(batches(generate(45, seed=seed, start_ns=T0), signers, key_ids))
    half = len(envelopes) // 2
    producer = PRODUCERS[0]

    def token_batch(*events: bytes) -> bytes:
        return seal_batch(list(events), producer=producer, key_id=key_ids[producer], signer=signers[producer])

    with Ledger.create(str(path), make_log_signer(), settings=SETTINGS) as ledger:
        for name, signer in signers.items():
            ledger.register_key(name, key_ids[name], signer.public_key)
        ledger.append(
            token_batch(
                token_event("ISSUED", REVOKED_TOKEN, T0, user_id="u-revoked", scopes=("read",)),
                token_event("REVOKED", REVOKED_TOKEN, T0 + 1_000_000, reason="logout"),
            )
        )
        for envelope in envelopes[:half]:
            ledger.append(envelope)
        ledger.seal()
        trusted = ledger.store.latest_checkpoint()
        assert trusted is not None
        first_half = path.with_name(path.stem + "-first-half.db")
        for suffix in ("", "-wal"):  # the database as a reader sees it: its file and its write-ahead log
            if Path(f"{path}{suffix}").exists():
                shutil.copyfile(f"{path}{suffix}", f"{first_half}{suffix}")
        for envelope in envelopes[half:]:
            ledger.append(envelope)
        late_use = token_event("USED", REVOKED_TOKEN, T0 + 10**12, resource="/v1/after-the-cut", outcome="ALLOW")
        receipt = ledger.append(token_batch(late_use)).receipts[0]
        assert receipt.verdict == "token.use_after_revoke"
        ledger.seal()
        return Built(path, ledger.log_verifier(), trusted.note, trusted.size, ledger.size, first_half)


def _runs_short(monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite's subject index is written in runs of 32,768 entries; short runs put rows in it here.
    monkeypatch.setattr(sqlite_store, "SUBJECT_RUN", 16)
    monkeypatch.setattr(sqlite_store, "_RUN_SLICE_MIN", 4)
    monkeypatch.setattr(sqlite_store, "_RUN_SLICE_PER_ENTRY", 0)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The attacks below rewrite rows in place as SQL sees them, so their ledger is in store layout 1;
    test_a_compact_ledger_checks_out_and_a_flipped_body_fails runs --since on layout 2."""
    with pytest.MonkeyPatch.context() as patch:
        _runs_short(patch)
        patch.setattr(sqlite_store, "SCHEMA_VERSION", 1)
        return _build(tmp_path_factory.mktemp("since") / "ledger.db")


def test_a_compact_ledger_checks_out_and_a_flipped_body_fails(tmp_path: Path) -> None:
    built = _build(tmp_path / "ledger.db")
    assert _one(built.path, "SELECT value FROM meta WHERE key = 'store_schema'") == ("2",)
    report = verify_since(str(built.path), built.note, verifier=built.verifier, workers=1)
    assert report.ok, report.problems
    assert report.checked == built.size - built.trusted_size
    idx, body = _one(built.path, "SELECT idx, body FROM entries WHERE idx = ?", (built.size - 5,))
    assert isinstance(body, bytes)
    flipped = body[:-1] + bytes([body[-1] ^ 1])
    _sql(built.path, ("UPDATE entries SET body = ? WHERE idx = ?", (flipped, idx)))
    report = verify_since(str(built.path), built.note, verifier=built.verifier, workers=1)
    assert not report.ok
    assert any(p.index == idx for p in report.problems), report.problems


@pytest.fixture
def built(pristine: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Built:
    _runs_short(monkeypatch)
    shutil.copyfile(pristine.path, tmp_path / "ledger.db")
    return Built(
        tmp_path / "ledger.db",
        pristine.verifier,
        pristine.note,
        pristine.trusted_size,
        pristine.size,
        pristine.first_half,
    )


@pytest.fixture(params=["workers1", "workers2-split"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    if request.param == "workers1":
        return 1
    monkeypatch.setattr(since_module, "_TARGET_CHUNK", 2 * SETTINGS.block_size)  # several chunks, two workers
    return 2


def _sql(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run ``statements`` on the ledger file with the append-only triggers dropped (anyone with the file can)."""
    with closing(sqlite3.connect(path)) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        for statement, params in statements:
            assert db.execute(statement, params).rowcount != 0, statement
        db.commit()


def _one(path: Path, query: str, params: tuple[object, ...] = ()) -> tuple[object, ...]:
    with closing(sqlite3.connect(path)) as db:
        row = db.execute(query, params).fetchone()
    assert row is not None, query
    return tuple(row)


def test_the_entries_since_the_trusted_checkpoint_check_out(built: Built, workers: int) -> None:
    report = verify_since(str(built.path), built.note, verifier=built.verifier, workers=workers)
    assert report.ok, report.problems
    assert report.trusted_size == built.trusted_size
    assert report.since == built.trusted_size  # the trusted checkpoint was signed at a seal: a block boundary
    assert report.checked == built.size - built.trusted_size
    assert report.blocks >= 2
    assert report.verdicts > 0
    assert report.to_json()["since"] == built.trusted_size


def test_a_verdict_after_the_cut_is_judged_from_the_state_before_it(built: Built, workers: int) -> None:
    """The use of a token revoked before the cut was recorded as token.use_after_revoke: judged from
    nothing (a token never seen) it would be token.use_without_issue, and the verdict would not match."""
    index = _one(built.path, "SELECT idx FROM entries WHERE verdict = 'token.use_after_revoke'")[0]
    assert isinstance(index, int)
    assert index >= built.trusted_size
    report = verify_since(str(built.path), built.note, verifier=built.verifier, workers=workers)
    assert report.ok, report.problems


def _after(built: Built, table: str, where: str = "") -> tuple[object, ...]:
    """The key of the first row of ``table`` about an entry after the cut."""
    column = {"links": "idx", "revocations": "idx", "subject_index": "idx", "envelopes": "first_idx"}[table]
    query = f"SELECT * FROM {table} WHERE {column} >= ? {where} ORDER BY {column} LIMIT 1"
    return _one(built.path, query, (built.trusted_size,))


def _tamper_body(built: Built) -> None:
    idx, body = _one(built.path, "SELECT idx, body FROM entries WHERE idx = ?", (built.size - 5,))
    assert isinstance(body, bytes)
    changed = body.replace(b'"recorded_at":"1', b'"recorded_at":"2', 1)
    assert changed != body
    _sql(built.path, ("UPDATE entries SET body = ? WHERE idx = ?", (changed, idx)))


def _drop_link(built: Built) -> None:
    kind, key, at, idx, _ = _after(built, "links")
    _sql(built.path, ("DELETE FROM links WHERE kind = ? AND key = ? AND at = ? AND idx = ?", (kind, key, at, idx)))


def _forge_link(built: Built) -> None:
    kind, key, at, idx, subject = _after(built, "links")
    assert isinstance(idx, int)
    _sql(built.path, ("INSERT INTO links VALUES (?, ?, ?, ?, ?)", (kind, key, at, idx + 1, subject)))


def _drop_revocation(built: Built) -> None:
    subject, _ = _after(built, "revocations")
    _sql(built.path, ("DELETE FROM revocations WHERE subject = ?", (subject,)))


def _drop_index_row(built: Built) -> None:
    subject, idx = _after(built, "subject_index", "AND subject LIKE 'token:%'")
    _sql(built.path, ("DELETE FROM subject_index WHERE subject = ? AND idx = ?", (subject, idx)))


def _move_envelope_row(built: Built) -> None:
    digest, *_ = _after(built, "envelopes")
    _sql(built.path, ("UPDATE envelopes SET first_idx = first_idx + 1 WHERE digest = ?", (digest,)))


def _drop_new_map_node(built: Built) -> None:
    (body,) = _one(
        built.path, "SELECT body FROM entries WHERE subject = ? ORDER BY idx DESC LIMIT 1", (BLOCKS_SUBJECT,)
    )
    assert isinstance(body, bytes)
    seal = decode_entry(body)
    assert isinstance(seal, SealEntry)
    with closing(sqlite3.connect(built.path)) as db:
        node = db.execute("SELECT node FROM map_nodes WHERE hash = ?", (bytes.fromhex(seal.block.subjects_root),))
        root = node.fetchone()[0]
    left = bytes(root[1:33])  # an interior node's left child: made or kept by the newest blocks
    _sql(built.path, ("DELETE FROM map_nodes WHERE hash = ?", (left,)))


def _change_prev_column(built: Built) -> None:
    _sql(built.path, ("UPDATE entries SET prev = zeroblob(32) WHERE idx = ?", (built.size - 3,)))


NEW_RANGE_TAMPERING = {
    "entry bytes": _tamper_body,
    "a link removed": _drop_link,
    "a link slipped in": _forge_link,
    "a revocation removed": _drop_revocation,
    "a subject index row removed": _drop_index_row,
    "an envelope row's first index": _move_envelope_row,
    "a subject-map node of the newest seal removed": _drop_new_map_node,
    "a prev column": _change_prev_column,
}


@pytest.mark.parametrize("what", sorted(NEW_RANGE_TAMPERING))
def test_tampering_after_the_cut_is_caught(built: Built, workers: int, what: str) -> None:
    assert verify_since(str(built.path), built.note, verifier=built.verifier, workers=workers).ok
    NEW_RANGE_TAMPERING[what](built)
    report = verify_since(str(built.path), built.note, verifier=built.verifier, workers=workers)
    assert not report.ok, what
    assert report.first_bad_index is None or report.first_bad_index >= built.trusted_size - 1


def test_tampering_only_before_the_cut_is_out_of_scope(built: Built) -> None:
    """A derived row of an entry before the cut is not looked at by --since (docs/verification.md): the
    full verification catches it."""
    kind, key, at, idx, _ = _one(built.path, "SELECT * FROM links WHERE idx < ? ORDER BY idx LIMIT 1", (40,))
    _sql(built.path, ("DELETE FROM links WHERE kind = ? AND key = ? AND at = ? AND idx = ?", (kind, key, at, idx)))
    assert verify_since(str(built.path), built.note, verifier=built.verifier, workers=1).ok
    assert not verify_ledger(str(built.path), verifier=built.verifier, workers=1).ok


def test_an_entry_before_the_cut_rewritten_fails_where_the_tree_reads_it(built: Built) -> None:
    """The entries before the cut are not read, but the stored tree nodes over them are: a ledger whose
    history was rewritten with its nodes is no extension of the trusted checkpoint."""
    _sql(built.path, ("UPDATE nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 0", ()))
    report = verify_since(str(built.path), built.note, verifier=built.verifier, workers=1)
    assert not report.ok
    assert {p.kind for p in report.problems} & {"tree_node", "check_trusted_checkpoint", "consistency"}


def test_a_forked_ledger_is_caught(pristine: Built, tmp_path: Path) -> None:
    """Another history under the same log key, as long or longer than the trusted checkpoint."""
    fork = _build(tmp_path / "fork.db", seed=8)
    assert fork.size > pristine.trusted_size
    report = verify_since(str(fork.path), pristine.note, verifier=pristine.verifier, workers=1)
    assert not report.ok
    assert {p.kind for p in report.problems} & {"trusted_checkpoint", "check_trusted_checkpoint"}


def test_a_rolled_back_ledger_is_refused(pristine: Built) -> None:
    """The ledger as it was before the trusted checkpoint's entries: the note claims more than it holds."""
    newest = _one(pristine.path, "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")[0]
    assert isinstance(newest, str)
    with pytest.raises(InputError, match="rolled back"):
        verify_since(str(pristine.first_half), newest, verifier=pristine.verifier, workers=1)


def test_a_note_that_is_no_checkpoint_of_this_log_is_refused(pristine: Built) -> None:
    url = str(pristine.path)
    with pytest.raises(InputError, match="not a checkpoint signed by this log's key"):
        verify_since(url, "not a note\n", verifier=pristine.verifier)
    other = Ed25519Signer(LOG_NAME, b"o" * 32)  # the same origin, another key
    text = pristine.note.split("\n\n")[0] + "\n"
    forged = sign_note(text, [other])
    with pytest.raises(InputError, match="not a checkpoint signed by this log's key"):
        verify_since(url, forged, verifier=pristine.verifier)
    log = make_log_signer()
    elsewhere = "another.example/log\n" + text.split("\n", 1)[1]
    elsewhere_note = sign_note(elsewhere, [log])
    with pytest.raises(InputError, match=r"is of the log 'another\.example/log'"):
        verify_since(url, elsewhere_note, verifier=pristine.verifier)


def test_the_cli_exit_codes(built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    note = tmp_path / "trusted.note"
    note.write_text(built.note, encoding="utf-8")
    key = str(built.verifier)
    assert main(["verify", "--ledger", str(built.path), "--key", key, "--since", str(note)]) == 0
    assert f"since index {built.trusted_size}" in capsys.readouterr().out
    missing = tmp_path / "missing.note"
    assert main(["verify", "--ledger", str(built.path), "--key", key, "--since", str(missing)]) == 2
    assert "cannot read the checkpoint note" in capsys.readouterr().err
    note.write_text("garbage\n", encoding="utf-8")
    assert main(["verify", "--ledger", str(built.path), "--key", key, "--since", str(note)]) == 2
    assert "not a checkpoint signed by this log's key" in capsys.readouterr().err
    note.write_text(built.note, encoding="utf-8")
    _tamper_body(built)
    assert main(["verify", "--ledger", str(built.path), "--key", key, "--since", str(note)]) == 1


def test_nothing_new_since_the_newest_checkpoint(built: Built) -> None:
    newest = _one(built.path, "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
    size, note = newest
    assert size == built.size
    assert isinstance(note, str)
    report = verify_since(str(built.path), note, verifier=built.verifier, workers=2)
    assert report.ok, report.problems
    assert report.checked == 0

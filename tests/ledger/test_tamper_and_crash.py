"""Verification catches each kind of tampering; a SIGKILLed writer loses no acknowledged batch."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.note import parse_verifier_key, verifier_key
from lineage_ledger.keys import write_signer_key
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.workload import PRODUCERS, batches, generate

T0 = 1_763_891_234_000_000_000


@pytest.fixture
def built(tmp_path: Path) -> tuple[str, str]:
    """A ledger of a few hundred entries in several blocks; returns (path, verifier key string)."""
    log = Ed25519Signer.generate("tamper.example/log")
    path = str(tmp_path / "t.db")
    ledger = Ledger.create(path, log, settings=LedgerSettings(block_size=40, block_seconds=1e9))
    signers = {p: Ed25519Signer.generate(p) for p in PRODUCERS}
    key_ids = {p: f"{p}-k" for p in PRODUCERS}
    for p, s in signers.items():
        ledger.register_key(p, key_ids[p], s.public_key)
    for envelope in batches(generate(40, start_ns=T0), signers, key_ids, max_batch=50):
        ledger.append(envelope)
    ledger.seal()
    ledger.close()
    return path, verifier_key(log.name, log.public_key)


def _attack(path: str, *sql: str) -> None:
    db = sqlite3.connect(path)
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    for name in names:
        db.execute(f"DROP TRIGGER {name}")
    for statement in sql:
        db.execute(statement)
    db.commit()
    db.close()


def _verify(path: str, key: str, workers: int = 2, trusted: str | None = None) -> tuple[bool, set[str], int | None]:
    report = verify_ledger(path, verifier=parse_verifier_key(key), workers=workers, trusted_checkpoint=trusted)
    return report.ok, {p.kind for p in report.problems}, report.first_bad_index


def test_clean_ledger_verifies(built: tuple[str, str]) -> None:
    for workers in (1, 2):
        assert _verify(*built, workers=workers) == (True, set(), None)


TAMPERS: dict[str, tuple[list[str], str, int]] = {
    "bytes as text": (["UPDATE entries SET body = CAST(body AS TEXT) WHERE idx = 57"], "entry_format", 57),
    "derived verdict": (["UPDATE entries SET verdict = 'forged' WHERE idx = 20"], "derived_column", 20),
    "derived subject": (["UPDATE entries SET subject = 'token:x' WHERE idx = 33"], "derived_column", 33),
    "deleted row": (["DELETE FROM entries WHERE idx = 44"], "missing", 44),
    "swapped rows": (
        [
            "UPDATE entries SET idx = -1 WHERE idx = 30",
            "UPDATE entries SET idx = 30 WHERE idx = 31",
            "UPDATE entries SET idx = 31 WHERE idx = -1",
        ],
        "position",
        30,
    ),
    "tree node": (["UPDATE nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 0"], "tree_node", 0),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_each_tamper_is_caught_at_its_index(built: tuple[str, str], name: str) -> None:
    sql, kind, index = TAMPERS[name]
    path, key = built
    _attack(path, *sql)
    ok, kinds, first = _verify(path, key)
    assert not ok
    assert kind in kinds
    assert first == index


def test_rewritten_bytes_with_consistent_hash_break_the_signed_root(built: tuple[str, str]) -> None:
    path, key = built
    db = sqlite3.connect(path)
    index, body = db.execute("SELECT idx, body FROM entries WHERE instr(body, 'ALLOW') > 0 LIMIT 1 OFFSET 7").fetchone()
    db.close()
    forged = body.replace(b'"ALLOW"', b'"DENY"')  # a denied request rewritten as allowed, or the reverse
    assert forged != body
    _attack(
        path, f"UPDATE entries SET body = x'{forged.hex()}', leaf = x'{leaf_hash(forged).hex()}' WHERE idx = {index}"
    )
    ok, kinds, first = _verify(path, key)
    assert not ok
    assert {"envelope", "checkpoint_root"} <= kinds  # the producer's signature and the log's both fail
    assert first == index


def test_truncation_is_caught_with_a_trusted_checkpoint(built: tuple[str, str]) -> None:
    path, key = built
    db = sqlite3.connect(path)
    sizes = [r[0] for r in db.execute("SELECT size FROM checkpoints ORDER BY size")]
    trusted = db.execute("SELECT note FROM checkpoints WHERE size = ?", (sizes[-1],)).fetchone()[0]
    db.close()
    cut = sizes[-2]  # roll back to an earlier checkpoint, removing the later one too
    _attack(path, f"DELETE FROM entries WHERE idx >= {cut}", f"DELETE FROM checkpoints WHERE size > {cut}")
    assert _verify(path, key)[0]  # internally consistent: only the saved checkpoint can tell
    ok, kinds, first = _verify(path, key, trusted=trusted)
    assert not ok
    assert "truncation" in kinds
    assert first == cut


def test_forged_checkpoint_signature_and_swapped_key_copy(built: tuple[str, str]) -> None:
    path, key = built
    other = Ed25519Signer.generate("tamper.example/log")
    _attack(path, f"UPDATE meta SET value = '{verifier_key(other.name, other.public_key)}' WHERE key = 'verifier_key'")
    ok, kinds, _ = _verify(path, key)
    assert not ok
    assert "meta" in kinds


@pytest.mark.parametrize("seed", range(6))
def test_any_flipped_byte_is_caught_at_its_index(built: tuple[str, str], seed: int) -> None:
    path, key = built
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    size = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    index = rng.randrange(size)
    body = bytearray(db.execute("SELECT body FROM entries WHERE idx = ?", (index,)).fetchone()[0])
    db.close()
    pos = rng.randrange(len(body))
    body[pos] ^= 1 << rng.randrange(8)
    _attack(path, f"UPDATE entries SET body = x'{bytes(body).hex()}' WHERE idx = {index}")
    ok, _, first = _verify(path, key, workers=1 + seed % 2)
    assert not ok
    assert first == index


_WRITER = textwrap.dedent(
    """
    import sys, time
    from lineage_ledger.core.crypto import Ed25519Signer
    from lineage_ledger.keys import load_signer
    from lineage_ledger.ledger.writer import Ledger, LedgerSettings
    from lineage_ledger.workload import PRODUCERS, batches, generate

    path, keyfile, round_ = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ledger = Ledger.open(path, load_signer(keyfile), settings=LedgerSettings(block_size=30, block_seconds=1e9))
    signers = {p: load_signer(f"{keyfile}.{p}") for p in PRODUCERS}
    key_ids = {p: f"{p}-k" for p in PRODUCERS}
    work = generate(200, seed=round_, start_ns=time.time_ns())
    for envelope in batches(work, signers, key_ids, max_batch=20):
        result = ledger.append(envelope)
        print(" ".join(f"{r.index}:{r.event_id}" for r in result.receipts), flush=True)
    print("done", flush=True)
    """
)


@pytest.mark.crash
def test_sigkill_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    log = Ed25519Signer.generate("crash.example/log")
    keyfile = tmp_path / "log.key"
    write_signer_key(keyfile, log)
    path = str(tmp_path / "c.db")
    ledger = Ledger.create(path, log)
    for p in PRODUCERS:
        signer = Ed25519Signer.generate(p)
        write_signer_key(f"{keyfile}.{p}", signer)
        ledger.register_key(p, f"{p}-k", signer.public_key)
    ledger.close()
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = random.Random(2026)
    acknowledged: dict[int, str] = {}
    for round_ in range(5):
        child = subprocess.Popen(
            [sys.executable, str(script), path, str(keyfile), str(round_)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        kill_after = rng.randrange(3, 40)
        for _ in range(kill_after):
            line = child.stdout.readline()
            if not line or line.startswith("done"):
                break
            for pair in line.split():
                index, event_id = pair.split(":")
                acknowledged[int(index)] = event_id
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        reopened = Ledger.open(path, log)  # opens cleanly after the kill
        reopened.seal()
        reopened.close()
        report = verify_ledger(path, verifier=parse_verifier_key(verifier_key(log.name, log.public_key)), workers=1)
        assert report.ok, report.problems[:3]
        db = sqlite3.connect(path)
        stored = dict(db.execute("SELECT idx, event_id FROM entries WHERE event_id IS NOT NULL").fetchall())
        db.close()
        missing = {i: e for i, e in acknowledged.items() if stored.get(i) != e}
        assert not missing
    assert len(acknowledged) > 50

"""Rotating the log's checkpoint signing key: ``lineage keys rotate-log`` as a real process, then every
verifier (``lineage verify``, the offline bundle verifier) following the chain from the original key, and a
rotation that the retiring key did not sign rejected everywhere."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.log_key import KeyChain, sign_rotation
from lineage_ledger.core.note import NoteVerifier, open_note
from lineage_ledger.errors import InputError, LedgerError, SignatureError
from lineage_ledger.keys import load_signer, write_signer_key
from lineage_ledger.ledger.writer import Ledger
from tests.conftest import token_event, token_id

LINEAGE = str(Path(sys.executable).parent / "lineage")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([LINEAGE, *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def write_events(path: Path, token: str, *kinds: str) -> Path:
    start = time.time_ns()
    lines = [token_event(kind, token, start + n * 1_000_000).decode() for n, kind in enumerate(kinds)]
    path.write_text("\n".join(lines) + "\n")
    return path


def verifier_of(path: Path) -> str:
    signer = load_signer(path)
    return str(NoteVerifier.from_public_key(signer.name, signer.public_key))


def offline_verify(bundle: Path, key: str) -> tuple[int, dict[str, Any]]:
    done = run("evidence", "verify", str(bundle), "--key", key, "--json", check=False)
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


@pytest.fixture
def rotated(tmp_path: Path) -> dict[str, object]:
    """A ledger made by the CLI: events, a bundle, a rotation, more events, a second bundle."""
    db = tmp_path / "rot.db"
    token = token_id("rotated")
    run("init", "--ledger", str(db))
    original = verifier_of(tmp_path / "rot.db.key")
    run("ingest", "--ledger", str(db), str(write_events(tmp_path / "a.jsonl", token, "ISSUED", "USED")))
    run("evidence", "export", token, "--ledger", str(db), "-o", str(tmp_path / "old.bundle"))
    new_key = tmp_path / "new.key"
    rotation = json.loads(
        run("keys", "rotate-log", "--ledger", str(db), "--new-key", str(new_key), "--generate", "--json").stdout
    )
    assert rotation["verifier_key"] == verifier_of(new_key) != original
    more = write_events(tmp_path / "b.jsonl", token, "USED", "REVOKED")
    run("ingest", "--ledger", str(db), "--log-key", str(new_key), str(more))
    run("evidence", "export", token, "--ledger", str(db), "-o", str(tmp_path / "new.bundle"))
    return {
        "db": db,
        "token": token,
        "original": original,
        "new": rotation["verifier_key"],
        "new_key": new_key,
        "index": rotation["index"],
        "dir": tmp_path,
    }


def test_rotation_hands_checkpoints_to_the_new_key_and_verify_follows_the_chain(rotated: dict[str, object]) -> None:
    db, original, new = str(rotated["db"]), str(rotated["original"]), str(rotated["new"])
    for trusted in (original, new):
        report = json.loads(run("verify", "--ledger", db, "--key", trusted, "--json").stdout)
        assert report["ok"], report["problems"]
        assert report["checkpoints"] >= 3
    # checkpoints up to the rotation are the old key's, those after it the new key's: one signer each
    store = sqlite3.connect(db)
    notes = store.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
    store.close()
    keys = {"old": NoteVerifier.from_public_key(*_split(original)), "new": NoteVerifier.from_public_key(*_split(new))}
    index = int(str(rotated["index"]))
    for size, note in notes:
        expected, other = ("new", "old") if size > index else ("old", "new")
        assert open_note(note, [keys[expected]])[1] == [keys[expected]]
        with pytest.raises(SignatureError):
            open_note(note, [keys[other]])
        assert note.count("\n— ") == 1  # each checkpoint is a standard note under one key
    # the retired key no longer opens the ledger for writing
    more = write_events(Path(str(rotated["dir"])) / "c.jsonl", str(rotated["token"]), "USED")
    refused = run("ingest", "--ledger", db, str(more), check=False)
    assert refused.returncode != 0
    assert "retired by a log key rotation" in refused.stderr


def _split(verifier: str) -> tuple[str, bytes]:
    import base64

    name, _, encoded = verifier.split("+", 2)
    return name, base64.b64decode(encoded)[1:]


def test_old_and_new_bundles_both_verify_from_the_original_key(rotated: dict[str, object]) -> None:
    directory = Path(str(rotated["dir"]))
    original, new = str(rotated["original"]), str(rotated["new"])
    old_bundle, new_bundle = directory / "old.bundle", directory / "new.bundle"
    assert "log_key_rotations" not in json.loads(old_bundle.read_text())
    assert len(json.loads(new_bundle.read_text())["log_key_rotations"]) == 1
    for bundle, count in ((old_bundle, 2), (new_bundle, 4)):
        code, report = offline_verify(bundle, original)
        assert code == 0, report["problems"]
        assert report["count"] == count
    code, report = offline_verify(new_bundle, new)  # trusting the new key directly works too
    assert code == 0, report["problems"]
    code, report = offline_verify(old_bundle, new)  # ... but it vouches for nothing before it existed
    assert code == 1
    # the offline file on its own, as an auditor would run it
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parents[2] / "src/lineage_ledger/offline.py"),
            str(new_bundle),
            "--key",
            original,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout


def test_a_bundle_without_its_rotation_does_not_verify(rotated: dict[str, object]) -> None:
    directory = Path(str(rotated["dir"]))
    bundle = json.loads((directory / "new.bundle").read_text())
    del bundle["log_key_rotations"]
    stripped = directory / "stripped.bundle"
    stripped.write_text(json.dumps(bundle))
    code, report = offline_verify(stripped, str(rotated["original"]))
    assert code == 1
    assert any("checkpoint" in str(p) for p in report["problems"])


def drop_guards(connection: sqlite3.Connection) -> None:
    """Drop the store's append-only triggers, as someone with write access to the file can."""
    for (trigger,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        connection.execute(f'DROP TRIGGER "{trigger}"')


def forge_rotation(db: Path, attacker: Ed25519Signer, new: Ed25519Signer) -> str:
    """What someone who can write the database but does not hold the log key can do: swap in their own
    key, rotate "from" it to a key of theirs with the ledger's own code, and swap the original key back."""
    connection = sqlite3.connect(db)
    drop_guards(connection)
    (original,) = connection.execute("SELECT value FROM meta WHERE key = 'verifier_key'").fetchone()
    attacker_key = str(NoteVerifier.from_public_key(attacker.name, attacker.public_key))
    connection.execute("UPDATE meta SET value = ? WHERE key = 'verifier_key'", (attacker_key,))
    connection.commit()
    with Ledger.open(str(db), attacker) as ledger:
        ledger.rotate_log_key(new)
    drop_guards(connection)  # opening the store put them back
    connection.execute("UPDATE meta SET value = ? WHERE key = 'verifier_key'", (original,))
    connection.commit()
    connection.close()
    return str(original)


def test_a_rotation_not_signed_by_the_current_key_is_rejected(tmp_path: Path) -> None:
    db = tmp_path / "forged.db"
    token = token_id("forged")
    run("init", "--ledger", str(db))
    run("ingest", "--ledger", str(db), str(write_events(tmp_path / "a.jsonl", token, "ISSUED", "USED")))
    name = load_signer(tmp_path / "forged.db.key").name
    attacker, chosen = Ed25519Signer.generate(name), Ed25519Signer.generate(name)
    original = forge_rotation(db, attacker, chosen)
    write_signer_key(tmp_path / "chosen.key", chosen)

    report = json.loads(run("verify", "--ledger", str(db), "--key", original, "--json", check=False).stdout)
    assert not report["ok"]
    kinds = {p["kind"] for p in report["problems"]}
    assert "log_key" in kinds  # the rotation itself
    assert "checkpoint" in kinds  # and the checkpoints its key signed
    assert any("not signed" in p["message"] or "no signature" in p["message"] for p in report["problems"])

    # the attacker's key does not open the ledger either: the chain from the stored key breaks
    refused = run(
        "ingest",
        "--ledger",
        str(db),
        "--log-key",
        str(tmp_path / "chosen.key"),
        str(write_events(tmp_path / "b.jsonl", token, "USED")),
        check=False,
    )
    assert refused.returncode != 0
    assert "rotation" in refused.stderr

    # and a bundle exported from the forged ledger fails offline from the original key
    run("evidence", "export", token, "--ledger", str(db), "-o", str(tmp_path / "forged.bundle"))
    code, offline = offline_verify(tmp_path / "forged.bundle", original)
    assert code == 1
    problems = " ".join(map(str, offline["problems"]))
    assert "log key rotation" in problems


def test_the_chain_checks_each_step() -> None:
    old, new, stranger = (Ed25519Signer.generate("log.example/l") for _ in range(3))
    old_key = NoteVerifier.from_public_key(old.name, old.public_key)
    new_key = NoteVerifier.from_public_key(new.name, new.public_key)
    good = sign_rotation("log.example/l", 7, old, new)
    chain = KeyChain(old_key, "log.example/l", [(7, good)])
    assert chain.current == new_key
    assert [chain.verifier_for(s) for s in (1, 7, 8, 100)] == [old_key, old_key, new_key, new_key]
    assert chain.since(new_key) == 8
    with pytest.raises(SignatureError):  # signed by someone else than the retiring key
        KeyChain(old_key, "log.example/l", [(7, sign_rotation("log.example/l", 7, stranger, new))])
    with pytest.raises(InputError, match="index"):  # replayed at another index
        KeyChain(old_key, "log.example/l", [(9, good)])
    with pytest.raises(InputError, match="names the log"):  # replayed in another log
        KeyChain(old_key, "other.example/l", [(7, good)])
    with pytest.raises(InputError):
        sign_rotation("log.example/l", 7, old, old)
    from lineage_ledger.core.note import sign_note

    only_old = sign_note(good[: good.index("\n\n") + 1], [old])
    with pytest.raises(SignatureError, match="new key"):  # the new key's holder did not agree
        KeyChain(old_key, "log.example/l", [(7, only_old)])
    with pytest.raises(LedgerError):
        chain.since(NoteVerifier.from_public_key(stranger.name, stranger.public_key))


def test_a_checkpoint_saved_before_the_rotation_is_still_trusted_after_it(rotated: dict[str, Any]) -> None:
    directory, db, original = Path(rotated["dir"]), str(rotated["db"]), str(rotated["original"])
    saved = directory / "saved.checkpoint"
    saved.write_text(json.loads((directory / "old.bundle").read_text())["checkpoint"])
    report = json.loads(
        run("verify", "--ledger", db, "--key", original, "--trusted-checkpoint", str(saved), "--json").stdout
    )
    assert report["ok"], report["problems"]
    assert report["trusted_size"] <= rotated["index"]  # a tree without the rotation entry
    # the same tree signed by the new key: a key the chain had not handed that size to
    from lineage_ledger.core.note import sign_note

    text = saved.read_text()
    resigned = directory / "resigned.checkpoint"
    resigned.write_text(sign_note(text[: text.index("\n\n") + 1], [load_signer(rotated["new_key"])]))
    done = run(
        "verify", "--ledger", db, "--key", original, "--trusted-checkpoint", str(resigned), "--json", check=False
    )
    report = json.loads(done.stdout)
    assert done.returncode == 1
    assert {p["kind"] for p in report["problems"]} == {"trusted_checkpoint"}

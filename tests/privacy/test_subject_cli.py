"""``lineage subject ...`` as a user runs it: init with personal data, ingest, export with evidence, erase,
verify; erasing twice, an unknown user, a crash half-way through an erasure (a real process killed at each
step), and key backups."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.entry import ErasureEntry, decode_entry
from lineage_ledger.store import open_store
from tests.privacy.helpers import ALICE, BOB, people_events

REPO = Path(__file__).resolve().parents[2]


def lineage(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``lineage`` command."""
    return subprocess.run(
        [sys.executable, "-m", "lineage_ledger", *argv],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture
def ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A sealing ledger made and fed with the CLI: Alice's and Bob's events ingested and sealed."""
    path = tmp_path / "people.db"
    assert main(["init", "--ledger", str(path), "--personal-data"]) == 0
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(people_events()) + b"\n")
    assert main(["ingest", str(events), "--ledger", str(path)]) == 0
    capsys.readouterr()
    return path


def _erasures(path: Path) -> list[ErasureEntry]:
    store = open_store(str(path), readonly=True)
    try:
        out = []
        for row in store.subjects_with_prefix("erasure:"):
            entry = decode_entry(row.body)
            assert isinstance(entry, ErasureEntry)
            out.append(entry)
        return out
    finally:
        store.close()


def test_export_erase_verify_from_the_command_line(ledger: Path, tmp_path: Path) -> None:
    db = str(ledger)
    out, evidence = tmp_path / "alice.jsonl", tmp_path / "alice.evidence.json"
    done = lineage(
        "subject", "export", "--ledger", db, "--user", ALICE["user_id"], "-o", str(out), "--evidence", str(evidence)
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 8
    assert {line["event"]["payload"]["ip"] for line in lines if "ip" in line["event"]["payload"]} == {ALICE["ip"]}
    as_csv = lineage("subject", "export", "--ledger", db, "--user", ALICE["user_id"], "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 8
    assert {r["payload.user_id"] for r in rows} == {ALICE["user_id"]}
    key = lineage("checkpoint", "--ledger", db, "--verifier-key")
    trusted = key.stdout.strip()
    assert lineage("evidence", "verify", str(evidence), "--key", trusted).returncode == 0

    erased = lineage(
        "subject", "erase", "--ledger", db, "--user", ALICE["user_id"], "--reason", "Art. 17 #44", "--json"
    )
    assert erased.returncode == 0, erased.stderr
    record = json.loads(erased.stdout)
    assert record["count"] == 8
    assert not record["already_erased"]
    twice = lineage("subject", "erase", "--ledger", db, "--user", ALICE["user_id"], "--reason", "again", "--json")
    assert twice.returncode == 0
    assert json.loads(twice.stdout)["already_erased"] is True
    assert json.loads(twice.stdout)["index"] == record["index"]
    unknown = lineage("subject", "erase", "--ledger", db, "--user", "nobody", "--reason", "x")
    assert unknown.returncode == 3
    assert "no personal data" in unknown.stderr

    after = lineage("subject", "export", "--ledger", db, "--user", ALICE["user_id"])
    assert after.returncode == 0
    assert [json.loads(line) for line in after.stdout.splitlines()] == [{"erasure": record}]
    assert lineage("verify", "--ledger", db, "--key", trusted).returncode == 0
    assert lineage("evidence", "verify", str(evidence), "--key", trusted).returncode == 0
    bob = lineage("subject", "export", "--ledger", db, "--user", BOB["user_id"])
    assert len(bob.stdout.splitlines()) == 4


def test_export_of_a_ledger_that_seals_nothing_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "plain.db")
    assert lineage("init", "--ledger", db).returncode == 0
    done = lineage("subject", "export", "--ledger", db, "--user", "u-1")
    assert done.returncode == 2
    assert "seals no personal data" in done.stderr


@pytest.mark.parametrize("point", ["marked", "recorded"])
def test_an_erasure_killed_half_way_is_finished_by_running_it_again(ledger: Path, point: str) -> None:
    db = str(ledger)
    argv = ["subject", "erase", "--ledger", db, "--user", ALICE["user_id"], "--reason", "Art. 17 #45"]
    child = Path(__file__).with_name("erase_child.py")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, str(child), point, *argv], cwd=REPO, env=env, timeout=120, check=False)
    assert killed.returncode == 9
    assert len(_erasures(ledger)) == (1 if point == "recorded" else 0)
    again = lineage(*argv, "--json")
    assert again.returncode == 0, again.stderr
    erasures = _erasures(ledger)
    assert len(erasures) == 1  # one record, never two
    assert erasures[0].erasure.count == 8
    assert json.loads(again.stdout)["index"] == erasures[0].index
    export = lineage("subject", "export", "--ledger", db, "--user", ALICE["user_id"])
    assert [json.loads(line).keys() for line in export.stdout.splitlines()] == [{"erasure"}]
    assert lineage("verify", "--ledger", db).returncode == 0
    assert len(lineage("subject", "export", "--ledger", db, "--user", BOB["user_id"]).stdout.splitlines()) == 4


def test_key_backups_restore_all_but_erased_keys(ledger: Path, tmp_path: Path) -> None:
    db = str(ledger)
    backup = tmp_path / "keys.backup"
    assert lineage("subject", "keys", "backup", "--ledger", db, str(backup)).returncode == 0
    assert backup.stat().st_mode & 0o077 == 0
    assert lineage("subject", "keys", "backup", "--ledger", db, str(backup)).returncode == 2  # never overwrites
    assert lineage("subject", "erase", "--ledger", db, "--user", ALICE["user_id"], "--reason", "r").returncode == 0
    restored = lineage("subject", "keys", "restore", "--ledger", db, str(backup), "--json")
    assert json.loads(restored.stdout) == {"restored": 1, "refused_erased": 1}
    assert lineage("subject", "export", "--ledger", db, "--user", ALICE["user_id"]).stdout.count("\n") == 1

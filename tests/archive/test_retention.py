"""Retention: a policy recorded in the log, archive files past it deleted only after a signed expiry, and
every later read of those entries says they expired under that policy (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lineage_ledger.archive.crash import CRASH_ENV
from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.archive.retention import DAY_NS, current_policy, set_policy
from lineage_ledger.archive.writer import archive_ledger, sealed_blocks
from lineage_ledger.cli.main import main
from lineage_ledger.core.entry import ArchiveEntry, decode_entry
from lineage_ledger.core.merkle import leaf_hash, verify_inclusion
from lineage_ledger.core.note import Checkpoint
from lineage_ledger.errors import ExpiredError
from lineage_ledger.keys import write_signer_key
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store
from tests.archive.helpers import NEW, OLD, SETTINGS, build
from tests.conftest import make_log_signer


def _expiring(url: str, where: Path) -> tuple[int, list[tuple[int, int, str]]]:
    """Archive three one-block files and record a policy; the --now at which the first two are past it."""
    built = build(url)
    with Ledger.open(url, make_log_signer(), settings=SETTINGS) as ledger:
        archive_ledger(ledger, ArchiveLocation(str(where)), built.cut, max_entries=1)
        set_policy(ledger, "short-1d", 1, 0, 1)
        ledger.seal()
        blocks = sealed_blocks(ledger.store)
        files = [(a.first, a.last, a.file) for a in ledger.store.archives()]
    assert len(files) == 3
    return int(blocks[1].hlc_last.split(".")[0]) + 1 + DAY_NS, files


def test_retention_expires_files_after_a_signed_record_and_reads_name_the_policy(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now, files = _expiring(ledger_url, tmp_path / "arch")
    capsys.readouterr()
    assert (
        main(["retention", "apply", "--ledger", ledger_url, "--log-key", _key(tmp_path), "--now", str(now), "--json"])
        == 0
    )
    applied = json.loads(capsys.readouterr().out)
    assert [(e["first"], e["last"]) for e in applied["expired"]] == [f[:2] for f in files[:2]]
    assert [(tmp_path / "arch" / f[2]).exists() for f in files] == [False, False, True]

    store = open_store(ledger_url, readonly=True)
    try:
        policy = current_policy(store)
        assert policy is not None
        assert policy.name == "short-1d"
        for expiry in store.expiries():
            record = decode_entry(store.entry(expiry.record).body)
            assert isinstance(record, ArchiveEntry)
            assert (record.change.action, record.change.policy, record.change.policy_index) == (
                "expire",
                "short-1d",
                policy.index,
            )
        with pytest.raises(ExpiredError, match="expired under retention policy 'short-1d'"):
            store.entry(files[0][0] + 2)
        # a proof of an entry still archived, and of a hot one, crosses the expired ranges through stored nodes
        checkpoint = store.latest_checkpoint()
        assert checkpoint is not None
        cp = Checkpoint.from_text(checkpoint.note.split("\n\n")[0] + "\n")
        for index in (files[2][0] + 1, checkpoint.size - 2):
            row = store.entry(index)
            proofs = Lineage(store).proofs([index])
            proof = [bytes.fromhex(h) for h in proofs["inclusion"][str(index)]]
            verify_inclusion(leaf_hash(row.body), index, proofs["tree_size"], proof, cp.root_hash)
    finally:
        store.close()

    # a token whose events all expired: expired under the policy, never a bare "not found"
    capsys.readouterr()
    assert main(["query", "timeline", OLD, "--ledger", ledger_url, "--json"]) != 0
    said = capsys.readouterr()
    assert "expired under retention policy 'short-1d'" in said.out + said.err
    # a token with events on both sides: the rest of its answer, and the expiry it touched
    assert main(["query", "timeline", NEW, "--ledger", ledger_url, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["tier"] == ["hot"]
    assert [e["policy"] for e in answer["expired"]] == ["short-1d"]
    assert all(r["index"] > files[1][1] for r in answer["answer"])
    # verify checks what can still be checked, and says what expired
    assert main(["verify", "--ledger", ledger_url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [(e["first"], e["policy"]) for e in report["expired"]] == [(f[0], "short-1d") for f in files[:2]]


def test_retention_killed_after_recording_an_expiry_deletes_the_file_on_rerun(ledger_url: str, tmp_path: Path) -> None:
    now, files = _expiring(ledger_url, tmp_path / "arch")
    args = [sys.executable, "-m", "lineage_ledger", "retention", "apply", "--ledger", ledger_url]
    args += ["--log-key", _key(tmp_path), "--now", str(now)]
    env = {**os.environ, CRASH_ENV: "expire-recorded"}
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "arch" / files[0][2]).exists()  # recorded as expired, not yet deleted
    env.pop(CRASH_ENV)
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert [(tmp_path / "arch" / f[2]).exists() for f in files] == [False, False, True]
    store = open_store(ledger_url, readonly=True)
    try:
        assert [(e.first, e.last) for e in store.expiries()] == [f[:2] for f in files[:2]]
    finally:
        store.close()


def _key(tmp_path: Path) -> str:
    key = tmp_path / "log.key"
    if not key.exists():
        write_signer_key(key, make_log_signer())
    return str(key)

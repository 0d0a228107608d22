"""A producer's saved receipts prove a rollback or a fork that ``lineage verify --key`` cannot see.

The operator restores an earlier copy of the database (rollback), then appends other entries to it (a
fork). Either copy is internally consistent and passes ``verify --key``; the receipts the producer saved
from the ledger's acknowledgements do not check out against it, and ``lineage receipt verify`` (run as a
real process) says which promise the ledger broke.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

from lineage_ledger.core.receipt import Receipt
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger
from tests.conftest import SETTINGS, BuiltLedger, append_in_batches, make_log_signer, make_producer_signer, token_events


def _save(receipts: list[Receipt], path: Path) -> Path:
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in receipts), encoding="utf-8")
    return path


def _receipt_verify(receipts: Path, ledger: str, key: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lineage_ledger.cli.main",
            "receipt",
            "verify",
            str(receipts),
            "--key",
            key,
            "--ledger",
            ledger,
            "--json",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return done.returncode, result


def _statuses(result: dict[str, object]) -> set[str]:
    receipts = result["receipts"]
    assert isinstance(receipts, list)
    return {r["status"] for r in receipts}


def _append(url: str, label: str, count: int, *, seal: bool) -> list[Receipt]:
    settings = dataclasses.replace(SETTINGS, block_size=10_000)
    with Ledger.open(url, make_log_signer(), settings=settings) as ledger:
        receipts = append_in_batches(ledger, token_events(count, label=label), make_producer_signer(), batch_size=7)
        if seal:
            ledger.seal()
    return receipts


def test_a_rollback_and_a_fork_pass_verify_but_not_the_producers_receipts(
    built_ledger: BuiltLedger, tmp_path: Path
) -> None:
    key = str(built_ledger.verifier)
    backup = tmp_path / "backup.db"
    shutil.copyfile(built_ledger.path, backup)  # the operator's earlier copy

    receipts = _save(_append(built_ledger.url, "acked", 20, seal=True), tmp_path / "receipts.jsonl")
    code, honest = _receipt_verify(receipts, built_ledger.url, key)
    assert code == 0, honest
    assert _statuses(honest) == {"sealed"}

    # rollback: the earlier copy is a valid ledger under the log key ...
    assert verify_ledger(str(backup), verifier=built_ledger.verifier, workers=1).ok
    code, rolled_back = _receipt_verify(receipts, str(backup), key)
    assert code == 1
    assert _statuses(rolled_back) == {"dropped"}  # ... but it no longer holds what was acknowledged

    # fork: the rollback re-extended with other entries, sealed and signed by the log key
    _append(str(backup), "other", 25, seal=True)
    assert verify_ledger(str(backup), verifier=built_ledger.verifier, workers=1).ok
    code, forked = _receipt_verify(receipts, str(backup), key)
    assert code == 1
    assert _statuses(forked) == {"rewritten"}


def test_pending_receipts_are_held_and_a_doctored_receipt_proves_nothing(
    built_ledger: BuiltLedger, tmp_path: Path
) -> None:
    key = str(built_ledger.verifier)
    acked = _append(built_ledger.url, "pending", 5, seal=False)
    code, pending = _receipt_verify(_save(acked, tmp_path / "pending.jsonl"), built_ledger.url, key)
    assert code == 0, pending
    assert _statuses(pending) == {"pending"}

    doctored = acked[0].to_json() | {"index": acked[0].index + 1}
    path = tmp_path / "doctored.jsonl"
    path.write_text(json.dumps(doctored) + "\n", encoding="utf-8")
    code, result = _receipt_verify(path, built_ledger.url, key)
    assert code == 1
    assert _statuses(result) == {"bad_receipt"}

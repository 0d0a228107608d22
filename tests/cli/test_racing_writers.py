"""Two `lineage ingest` processes on one ledger, the second started at many offsets into the first.

Without a writer lock this corrupted the ledger for good at some offsets (two entries claiming one index,
chains linked to the wrong predecessor, a seal over the wrong range) while both runs exited 0. Whatever the
offset, exactly one of these must hold for the second run: it was refused at once naming the first (exit 3,
nothing written), or it ran after the first had finished; and the ledger must verify with every event of every
successful run in it exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lineage_ledger.store import open_store
from lineage_ledger.workload import generate

T0 = 1_796_115_600_000_000_000
LINEAGE = [str(Path(sys.executable).parent / "lineage")]
OFFSETS_S = (0.0, 0.3, 0.8, 1.5)


def _lineage(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.Popen([*LINEAGE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _event_ids(path: Path) -> set[str]:
    return {json.loads(line)["event_id"] for line in path.read_text("utf-8").splitlines()}


@pytest.fixture(scope="module")
def event_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two halves of one workload: the same tokens, disjoint events."""
    events = [body for _, _, body in generate(400, start_ns=T0).events]
    folder = tmp_path_factory.mktemp("race")
    half = len(events) // 2
    first, second = folder / "first.jsonl", folder / "second.jsonl"
    first.write_bytes(b"\n".join(events[:half]) + b"\n")
    second.write_bytes(b"\n".join(events[half:]) + b"\n")
    return first, second


@pytest.mark.parametrize("offset", OFFSETS_S)
def test_a_second_writer_is_refused_or_waits_its_turn(
    offset: float, event_files: tuple[Path, Path], tmp_path: Path
) -> None:
    ledger = tmp_path / "race.db"
    init = subprocess.run(
        [*LINEAGE, "init", "--ledger", str(ledger), "--json"], check=False, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    key = json.loads(init.stdout)["verifier_key"]

    first = _lineage("ingest", str(event_files[0]), "--ledger", str(ledger), "--batch", "200", "--json")
    time.sleep(offset)  # the offset is the experiment's variable; the assertions hold for any timing
    second = _lineage("ingest", str(event_files[1]), "--ledger", str(ledger), "--batch", "200", "--json")
    _, err1 = first.communicate(timeout=300)
    _, err2 = second.communicate(timeout=300)

    assert first.returncode in (0, 3), err1
    assert second.returncode in (0, 3), err2
    landed: set[str] = set()
    refused: set[str] = set()
    for proc, err, path in ((first, err1, event_files[0]), (second, err2, event_files[1])):
        if proc.returncode == 0:
            landed |= _event_ids(path)
        else:
            refused |= _event_ids(path)
            other = second if proc is first else first
            assert "LockedError" in err, err
            assert "open for writing by process" in err, err
            assert f"process {other.pid} (" in err, err  # names the holder
    assert landed, "at least one of the two runs must succeed"

    verify = subprocess.run(
        [*LINEAGE, "verify", "--ledger", str(ledger), "--key", key, "--json"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    store = open_store(str(ledger), readonly=True)
    try:
        recorded = [row.event_id for row in store.entries(0, store.size()) if row.event_id is not None]
    finally:
        store.close()
    events_only = [e for e in recorded if e in landed]
    assert len(events_only) == len(set(events_only)) == len(landed)
    assert not refused & set(recorded), "a refused run wrote nothing"


def _size(ledger: Path) -> int:
    store = open_store(str(ledger), readonly=True)
    try:
        return store.size()
    finally:
        store.close()


def test_a_rerun_after_a_crash_resumes_and_reports_duplicates_once(
    event_files: tuple[Path, Path], tmp_path: Path
) -> None:
    ledger = tmp_path / "resume.db"
    init = subprocess.run([*LINEAGE, "init", "--ledger", str(ledger), "--json"], check=False, capture_output=True)
    assert init.returncode == 0, init.stderr
    key = json.loads(init.stdout)["verifier_key"]
    both = tmp_path / "both.jsonl"
    both.write_bytes(event_files[0].read_bytes() + event_files[1].read_bytes())
    total = len(_event_ids(both))

    crashed = _lineage("ingest", str(both), "--ledger", str(ledger), "--batch", "50")
    deadline = time.monotonic() + 120
    while _size(ledger) < 200 and crashed.poll() is None:  # polling a condition, bounded by the deadline
        assert time.monotonic() < deadline
        time.sleep(0.01)
    crashed.kill()
    crashed.communicate()
    present = _size(ledger)

    rerun = subprocess.run(
        [*LINEAGE, "ingest", str(both), "--ledger", str(ledger), "--json"], check=False, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "reloaded" not in rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["recorded"] + summary["duplicates"] == total
    assert summary["duplicates"] >= present - 2  # what the crashed run committed (less its key entries)

    again = subprocess.run(
        [*LINEAGE, "ingest", str(both), "--ledger", str(ledger), "--json"], check=False, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert (json.loads(again.stdout)["recorded"], json.loads(again.stdout)["duplicates"]) == (0, total)
    verify = subprocess.run(
        [*LINEAGE, "verify", "--ledger", str(ledger), "--key", key], check=False, capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

"""A real ``lineage archive`` killed (SIGKILL) at each of its steps leaves the hot entries or a verified
file, never neither: after a rerun, the ledger verifies and every query answers as before the archive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lineage_ledger.archive.crash import CRASH_ENV
from lineage_ledger.keys import write_signer_key
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.store import open_store
from tests.archive.helpers import CHILD, NEW, OLD, build
from tests.conftest import make_log_signer


def _lineage(*args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash is not None:
        env[CRASH_ENV] = crash
    return subprocess.run(
        [sys.executable, "-m", "lineage_ledger", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _answers(url: str) -> dict[str, list[tuple[int, bytes]]]:
    store = open_store(url, readonly=True)
    try:
        return {t: [(r.index, r.body) for r in store.subject_entries(["token:" + t])] for t in (OLD, NEW, CHILD)}
    finally:
        store.close()


@pytest.mark.parametrize("point", ["writing", "written", "verified", "recorded", "deleted"])
def test_archive_killed_at_each_step_then_rerun_loses_nothing(ledger_url: str, tmp_path: Path, point: str) -> None:
    built = build(ledger_url)
    key = tmp_path / "log.key"
    write_signer_key(key, make_log_signer())
    before = _answers(ledger_url)
    args = ("archive", "--ledger", ledger_url, "--log-key", str(key), "--to", str(tmp_path / "arch"))
    killed = _lineage(*args, "--before", built.cut, crash=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # whatever the step, every entry is still readable and the ledger verifies
    assert _answers(ledger_url) == before
    assert verify_ledger(ledger_url).ok
    rerun = _lineage(*args, "--before", built.cut, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert _answers(ledger_url) == before
    store = open_store(ledger_url, readonly=True)
    try:
        (archive,) = store.archives()
        assert (archive.first, archive.last) == (0, built.archived_last)
        hot = getattr(store, "hot", store)
        assert all(r.event_id is None for r in hot.entries(0, built.archived_last + 1))
    finally:
        store.close()
    assert verify_ledger(ledger_url).ok
    verified = _lineage("verify", "--ledger", ledger_url, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    leftovers = [p.name for p in (tmp_path / "arch").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []  # a temporary file a killed write left is removed by the next write

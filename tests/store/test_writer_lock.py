"""One writer per ledger: a store opened for writing holds a lock that a second writer cannot take.

Real processes hold the lock here where it matters (a lock the kernel releases when its holder dies is only
shown to be released by killing a real holder); tests/cli/test_racing_writers.py races whole CLI runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineage_ledger.errors import LockedError, StoreError
from lineage_ledger.store import open_store
from lineage_ledger.store.base import Store
from tests.services import PostgresLedger

HOLD_SCRIPT = textwrap.dedent(
    """
    import sys
    from lineage_ledger.store import open_store
    store = open_store(sys.argv[1])
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
    store.close()
    """
)


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A separate process holding the writer lock of a fresh SQLite ledger file."""
    path = str(tmp_path / "held.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    yield proc, path
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_writer_in_another_process_is_refused_naming_the_holder(
    holder_process: tuple[subprocess.Popen[str], str],
) -> None:
    proc, path = holder_process
    with pytest.raises(LockedError) as caught:
        open_store(path)
    message = str(caught.value)
    assert f"process {proc.pid}" in message
    assert f"on host {socket.gethostname()}" in message
    assert " since 20" in message
    assert path in message
    assert "lineage emit --url" in message  # says how to write through a running server instead


def test_readers_need_no_lock(holder_process: tuple[subprocess.Popen[str], str]) -> None:
    _, path = holder_process
    reader = open_store(path, readonly=True)
    try:
        assert reader.size() == 0
    finally:
        reader.close()


def test_the_lock_dies_with_its_holder(holder_process: tuple[subprocess.Popen[str], str]) -> None:
    proc, path = holder_process
    with pytest.raises(LockedError):
        open_store(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = open_store(path)  # no stale lock after a crash
    store.close()


def test_a_second_writer_in_the_same_process_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = str(tmp_path / "one.db")
    first = open_store(path)
    try:
        with pytest.raises(LockedError, match=f"process {os.getpid()}"):
            open_store(f"sqlite:///{path}")  # the same file under another spelling
    finally:
        first.close()
    second = open_store(path)
    second.close()


def test_the_lock_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    open_store(str(path)).close()
    assert (tmp_path / "private.db.lock").stat().st_mode & 0o777 == 0o600


def test_an_unopenable_lock_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    (tmp_path / "x.db.lock").mkdir()  # a directory where the lock file belongs
    with pytest.raises(StoreError, match="writer lock") as caught:
        open_store(str(path))
    assert not isinstance(caught.value, LockedError)


def test_postgres_has_one_writer(postgres_ledger: PostgresLedger) -> None:
    first = open_store(postgres_ledger.writer_url)
    try:
        with pytest.raises(LockedError) as caught:
            open_store(postgres_ledger.writer_url)
        message = str(caught.value)
        assert f"lineage {os.getpid()}@{socket.gethostname()}"[:63] in message
        assert "PostgreSQL backend" in message
        reader = open_store(postgres_ledger.auditor_url, readonly=True)
        reader.close()
    finally:
        first.close()
    second = open_store(postgres_ledger.writer_url)
    second.close()


def test_postgres_lock_goes_with_a_killed_holder(postgres_ledger: PostgresLedger) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, postgres_ledger.writer_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(LockedError, match=f"lineage {proc.pid}@"):
            open_store(postgres_ledger.writer_url)
    finally:
        proc.kill()
        proc.wait()
    # the server notices the dead client's closed socket and ends its session, releasing the lock
    store = _open_when_released(postgres_ledger.writer_url)
    store.close()


def _open_when_released(url: str) -> Store:
    """Open for writing, retrying while the server has not yet ended a killed client's session (it learns of it
    from the closed socket; bounded: 100 tries of 50 ms)."""
    for _ in range(100):
        try:
            return open_store(url)
        except LockedError:
            time.sleep(0.05)
    return open_store(url)

"""SQLite's WAL stays bounded while a writer commits without pause (store.sqlite._Checkpointer).

SQLite starts the WAL over only when a write transaction begins with every frame copied back into the
database. A checkpoint running beside a busy writer copies what it saw when it began, while new commits
land: checkpointed that way alone, the WAL grew for as long as the writer wrote (1.3 GB at 400,000 entries).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lineage_ledger.store import open_store, sqlite
from lineage_ledger.store.base import BatchWrite, EntryRow, EnvelopeRow

ROWS_PER_COMMIT = 100
COMMITS = 300
BODY = bytes(1000)


def _commit(store: sqlite.SQLiteStore, n: int) -> None:
    start = n * ROWS_PER_COMMIT
    rows = [
        EntryRow(i, f"token:{i % 997}", None, None, bytes(32), i.to_bytes(32, "big"), "ok", BODY)
        for i in range(start, start + ROWS_PER_COMMIT)
    ]
    store.write(
        BatchWrite(
            entries=rows,
            envelopes=[EnvelopeRow(start.to_bytes(32, "big"), "svc", "k1", b"{}", b"sig", bytes(32) * 100, start)],
        )
    )


@pytest.mark.parametrize(("readers", "converging"), [(False, True), (True, True), (False, False)])
def test_wal_restarts_under_a_steady_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers: bool, converging: bool
) -> None:
    monkeypatch.setattr(sqlite, "_CHECKPOINT_INTERVAL_S", 0.005)
    monkeypatch.setattr(sqlite, "_RESTART_FRAMES", 256)  # 1 MB
    if not converging:  # the catch-up passes never get there: only the forced last pass restarts the WAL
        monkeypatch.setattr(sqlite, "_LAST_PASS_FRAMES", -1)
    path = tmp_path / "wal.db"
    store = open_store(str(path))
    assert isinstance(store, sqlite.SQLiteStore)
    store.initialise({"origin": "wal.example/log", "verifier_key": "unused"})
    stop = threading.Event()

    def read() -> None:  # short reads alongside, as a served ledger has
        while not stop.is_set():
            list(store.entries(0, 10))

    reader = threading.Thread(target=read)
    if readers:
        reader.start()
    try:
        wal_peak = 0
        for n in range(COMMITS):
            _commit(store, n)
            wal_peak = max(wal_peak, os.path.getsize(f"{path}-wal"))
    finally:
        stop.set()
        if readers:
            reader.join()
    written = COMMITS * ROWS_PER_COMMIT * len(BODY)
    db_size = os.path.getsize(path)
    store.close()
    # every entry's page went through the WAL; a WAL that never restarted holds them all
    assert wal_peak < written / 2, f"WAL reached {wal_peak} bytes for {written} bytes of entries"
    assert db_size > written  # the checkpoints did copy the entries back
    reopened = open_store(str(path))
    try:
        end = COMMITS * ROWS_PER_COMMIT
        assert [r.index for r in reopened.entries(end - 3, end)] == [29997, 29998, 29999]
    finally:
        reopened.close()

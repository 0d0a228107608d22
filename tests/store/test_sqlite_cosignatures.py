"""A SQLite ledger written before cosignatures were stored still reads when opened read-only (no table to
create then), and gets the table the first time it is opened for writing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lineage_ledger.store import open_store
from lineage_ledger.store.base import BatchWrite, CheckpointRow, EntryRow


def test_an_older_ledger_reads_read_only_and_gains_the_table_when_opened_for_writing(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    store = open_store(path)
    store.initialise({"origin": "old.example/log"})
    entry = EntryRow(0, "token:a", "e0", None, bytes(32), bytes([1]) * 32, "ok", b"{}")
    store.write(BatchWrite(entries=[entry], checkpoint=CheckpointRow(1, "cp\n\n— log A\n")))
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE cosignatures")  # as a ledger from before the table existed
    db.commit()
    db.close()

    reader = open_store(path, readonly=True)
    assert reader.latest_checkpoint() == CheckpointRow(1, "cp\n\n— log A\n")
    assert reader.checkpoints() == [CheckpointRow(1, "cp\n\n— log A\n")]
    assert reader.cosigned_size("w.example/1", 7) == 0
    reader.close()

    writer = open_store(path)
    writer.add_cosignatures(1, [("w.example/1", 7, "— w.example/1 W\n")])
    assert writer.latest_checkpoint() == CheckpointRow(1, "cp\n\n— log A\n— w.example/1 W\n")
    writer.close()

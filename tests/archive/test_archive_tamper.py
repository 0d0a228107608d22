"""``lineage verify`` checks every archive file against the log: each way a file can be damaged or moved is
reported with the index range it affects, and an intact archive verifies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.archive.writer import archive_ledger
from lineage_ledger.cli.main import main
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store
from lineage_ledger.store.base import ArchiveRow
from tests.archive.helpers import SETTINGS, build
from tests.conftest import make_log_signer


def _archived(url: str, where: Path) -> list[ArchiveRow]:
    built = build(url)
    with Ledger.open(url, make_log_signer(), settings=SETTINGS) as ledger:
        archive_ledger(ledger, ArchiveLocation(str(where)), built.cut, max_entries=1)  # one file per block
    store = open_store(url, readonly=True)
    try:
        return store.archives()
    finally:
        store.close()


def _verify(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = main(["verify", "--ledger", url, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _flip_byte(files: list[Path]) -> None:
    data = bytearray(files[1].read_bytes())
    data[len(data) // 3] ^= 0x01
    files[1].write_bytes(bytes(data))


def _drop_row_group(files: list[Path]) -> None:
    table = pq.read_table(files[1])
    pq.write_table(table, files[1], row_group_size=8, compression="zstd")  # several row groups
    kept = pq.ParquetFile(files[1]).read_row_groups([0, 2, 3, 4, 5])  # the second one dropped
    pq.write_table(kept, files[1], compression="zstd")


def _missing(files: list[Path]) -> None:
    files[1].unlink()


def _duplicated(files: list[Path]) -> None:
    shutil.copyfile(files[1], files[1].with_name("entries-000000000099-000000000120.parquet"))


def _swapped(files: list[Path]) -> None:
    a, b = files[1].read_bytes(), files[2].read_bytes()
    files[1].write_bytes(b)
    files[2].write_bytes(a)


@pytest.mark.parametrize(
    ("damage", "hit", "says"),
    [
        (_flip_byte, [1], "SHA-256 differs"),
        (_drop_row_group, [1], "SHA-256 differs"),
        (_missing, [1], "missing"),
        (_duplicated, [], "no archive record names (claims entries 99..120)"),
        (_swapped, [1, 2], "SHA-256 differs"),
    ],
    ids=["flipped-byte", "dropped-row-group", "missing-file", "duplicated-file", "swapped-files"],
)
def test_verify_reports_each_damaged_archive_file_with_its_range(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[list[Path]], None],
    hit: list[int],
    says: str,
) -> None:
    url = str(tmp_path / "ledger.db")
    archives = _archived(url, tmp_path / "arch")
    assert len(archives) == 3
    code, report = _verify(url, capsys)
    assert code == 0
    assert report["ok"] is True
    damage([tmp_path / "arch" / a.file for a in archives])
    code, report = _verify(url, capsys)
    assert code == 1
    assert report["ok"] is False
    problems = report["problems"]
    assert isinstance(problems, list)
    assert all(says in p["message"] for p in problems), problems
    if hit:
        ranges = sorted(f"entries {archives[n].first}..{archives[n].last}" for n in hit)
        assert sorted(p["message"].split(" (")[0] for p in problems) == ranges
    assert {p["index"] for p in problems} == ({archives[n].first for n in hit} if hit else {99})


def test_a_file_rewritten_with_other_entries_and_its_hash_is_caught_by_the_signed_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store's row is not signed: a file replaced and the row's hash "fixed" still fails the record."""
    url = str(tmp_path / "ledger.db")
    archives = _archived(url, tmp_path / "arch")
    import sqlite3

    db = sqlite3.connect(url)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE archives SET sha256 = ? WHERE first = ?", (bytes(32), archives[0].first))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM entries WHERE idx = ?", (archives[0].last,))  # a seal in an archived range
    finally:
        db.close()
    code, report = _verify(url, capsys)
    assert code == 0, report


def test_an_expiry_row_slipped_in_to_hide_a_damaged_file_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "ledger.db")
    archives = _archived(url, tmp_path / "arch")
    _flip_byte([tmp_path / "arch" / a.file for a in archives])
    import sqlite3

    db = sqlite3.connect(url)
    try:  # the tables take INSERTs: a row saying file 1 expired would skip its checks
        db.execute("INSERT INTO expiries VALUES (?, ?, 'forged', 0, 0)", (archives[1].first, archives[1].last))
        db.commit()
    finally:
        db.close()
    code, report = _verify(url, capsys)
    assert code == 1
    problems = report["problems"]
    assert isinstance(problems, list)
    assert [p["message"] for p in problems] == [
        f"entries {archives[1].first}..{archives[1].last}: marked expired with no signed expiry"
    ]

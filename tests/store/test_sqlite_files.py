"""A SQLite ledger's files: created private (0600, or the group mode asked for) whatever the umask; a
read-only ledger refused for writing with a message naming the file and left writable again once it is made
writable; a failed ingest says truly what was not stored.

Root bypasses file permissions, so the processes that must meet them run as root without CAP_DAC_OVERRIDE
and CAP_DAC_READ_SEARCH (``setpriv``), which makes the kernel check the mode bits for them as for anyone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineage_ledger.cli.main import TOKEN_SECRET_ENV_VAR, main
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.errors import InputError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, write_signer_key
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store
from tests.conftest import make_log_signer, token_events
from tests.tmpfs import needs_root, tmpfs

SIDE_FILES = ("", "-wal", "-shm")
LINEAGE = str(Path(sys.executable).parent / "lineage")
WITHOUT_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0: every file mode below is the code's own choice, not the umask's."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("open_umask")
@pytest.mark.parametrize(("query", "expected"), [("", 0o600), ("?file_mode=0640", 0o640), ("?file_mode=660", 0o660)])
def test_database_wal_and_shm_are_created_with_the_configured_mode(tmp_path: Path, query: str, expected: int) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.create(f"{path}{query}", make_log_signer()) as ledger:
        ledger.seal()
        for suffix in SIDE_FILES:
            assert mode(path.with_name(path.name + suffix)) == expected, suffix


@pytest.mark.parametrize("bad", ["0644", "0666", "0700", "0604", "rw"])
def test_a_file_mode_that_opens_the_ledger_to_others_is_refused(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "ledger.db"
    with pytest.raises(InputError, match="file_mode"):
        open_store(f"{path}?file_mode={bad}")
    assert not path.exists()


@pytest.mark.usefixtures("open_umask")
def test_cli_and_service_secrets_are_created_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_KEY_ENV_VAR, raising=False)
    monkeypatch.delenv(TOKEN_SECRET_ENV_VAR, raising=False)
    ledger = tmp_path / "ledger.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    assert main(["apikey", "create", "--ledger", str(ledger), "--role", "auditor"]) == 0
    # lineage init creates the token secret; lineage serve creates its own key beside the ledger if missing
    write_signer_key(tmp_path / "ledger.db.service.key", Ed25519Signer.generate("lineage-service"))
    created = sorted(p.name for p in tmp_path.iterdir())
    expected = {"ledger.db", "ledger.db.key", "ledger.db.producer.key", "ledger.db.apikeys.json", "ledger.db.secret"}
    assert expected | {"ledger.db.service.key"} <= set(created), created
    for name in created:
        assert mode(tmp_path / name) == 0o600, name


def run_without_dac(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (DEFAULT_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR)}
    return subprocess.run(
        [*WITHOUT_DAC, *argv], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def events_file(tmp_path: Path, count: int, label: str) -> Path:
    path = tmp_path / f"{label}.jsonl"
    path.write_bytes(b"".join(e + b"\n" for e in token_events(count, label=label)))
    return path


@needs_root
def test_a_read_only_ledger_is_refused_by_name_and_writable_once_made_so(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    events = events_file(tmp_path, 50, "ro")
    ledger.chmod(0o400)
    refused = run_without_dac(LINEAGE, "ingest", str(events), "--ledger", str(ledger), "--batch", "20", cwd=tmp_path)
    assert refused.returncode == 3, refused.stderr
    assert f"the ledger file {ledger} is read-only" in " ".join(refused.stderr.split()), refused.stderr
    for suffix in SIDE_FILES[1:]:
        side = ledger.with_name(ledger.name + suffix)
        assert not side.exists() or mode(side) == 0o600, suffix

    ledger.chmod(0o600)
    done = run_without_dac(LINEAGE, "ingest", str(events), "--ledger", str(ledger), "--batch", "20", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "recorded 50 events" in done.stdout, done.stdout


@needs_root
def test_a_ledger_in_a_read_only_directory_is_refused_by_name(tmp_path: Path) -> None:
    directory = tmp_path / "ledgers"
    directory.mkdir()
    ledger = directory / "ledger.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    events = events_file(tmp_path, 20, "dir")
    directory.chmod(0o500)  # the database stays writable; its -wal and -shm cannot be created beside it
    try:
        refused = run_without_dac(LINEAGE, "ingest", str(events), "--ledger", str(ledger), cwd=tmp_path)
    finally:
        directory.chmod(0o700)
    assert refused.returncode == 3, refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"the directory {directory} of the ledger is read-only" in message, message


@needs_root
def test_a_shm_left_read_only_by_another_client_does_not_lock_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    ledger.chmod(0o400)
    # any SQLite client reading the read-only WAL database creates -shm with the database's mode
    reader = "import sqlite3; print(sqlite3.connect('ledger.db').execute('SELECT count(*) FROM entries').fetchone())"
    read = run_without_dac(sys.executable, "-c", reader, cwd=tmp_path)
    assert read.returncode == 0, read.stderr
    shm = ledger.with_name(ledger.name + "-shm")
    assert mode(shm) == 0o400  # the trap: read-only, and still there after the reader is gone

    ledger.chmod(0o600)
    events = events_file(tmp_path, 30, "shm")
    done = run_without_dac(LINEAGE, "ingest", str(events), "--ledger", str(ledger), "--batch", "10", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "recorded 30 events" in done.stdout, done.stdout


@needs_root
def test_an_ingest_stopped_by_a_full_disk_says_what_was_not_stored(tmp_path: Path) -> None:
    events = events_file(tmp_path, 20_000, "full")
    with tmpfs(tmp_path / "disk", "2m") as disk:
        ledger = disk / "ledger.db"
        assert main(["init", "--ledger", str(ledger)]) == 0
        run = subprocess.run(
            [LINEAGE, "ingest", str(events), "--ledger", str(ledger), "--batch", "500", "--no-seal"],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 3, run.stderr
        message = " ".join(run.stderr.split())
        assert "is full" in message, message
        assert "may or may not" not in message, message
        assert "not stored (the store holds nothing of them)" in message, message
        store = open_store(str(ledger), readonly=True)
        try:
            size = store.size()
        finally:
            store.close()
        assert 1 < size < 1 + 20_000
        assert (size - 1) % 500 == 0  # whole batches only: the key entry, then full batches
        report = verify_ledger(str(ledger), workers=1)
        assert report.ok, report.problems

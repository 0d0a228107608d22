"""Ledgers, published directories, static and ``lineage serve --public-log`` servers, and ``lineage monitor``
runs, as real processes, for the monitor's tests."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.store import open_store
from tests.conftest import token_events
from tests.service.serving import free_port, wait_healthy

LINEAGE = str(Path(sys.executable).parent / "lineage")
ORIGIN = "monitored.example/log"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI in process; its standard output (an assertion names stderr if it fails)."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def create(capsys: pytest.CaptureFixture[str], ledger: Path, key: Path, events: int, label: str) -> None:
    cli(capsys, "init", "--ledger", str(ledger), "--log-key", str(key), "--origin", ORIGIN)
    ingest(capsys, ledger, key, events, label)


def ingest(capsys: pytest.CaptureFixture[str], ledger: Path, key: Path, events: int, label: str) -> None:
    path = ledger.with_name(f"{ledger.stem}-{label}.jsonl")
    path.write_bytes(b"".join(e + b"\n" for e in token_events(events, label=label)))
    cli(capsys, "ingest", str(path), "--ledger", str(ledger), "--log-key", str(key))


def verifier_key(capsys: pytest.CaptureFixture[str], ledger: Path) -> str:
    return cli(capsys, "checkpoint", "--ledger", str(ledger), "--verifier-key").strip()


def publish(capsys: pytest.CaptureFixture[str], ledger: Path, directory: Path) -> None:
    cli(capsys, "publish", "--ledger", str(ledger), "--dir", str(directory))


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite ledger (WAL included), replacing ``target``'s content."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def monitor(log: str, key: str, state: Path, *flags: str) -> tuple[int, list[dict[str, object]]]:
    """One ``lineage monitor --once`` round as a real process: its exit status and its findings."""
    done = subprocess.run(
        [LINEAGE, "monitor", "--log", log, "--key", key, "--state", str(state), "--once", *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within 30 s:\n{log.read_text()}"
        time.sleep(0.05)  # polling a condition with a deadline


@contextmanager
def static_server(directory: Path, tmp_path: Path) -> Iterator[str]:
    """Python's http.server in front of ``directory``: a plain static web server, as a CDN would be."""
    port = free_port()
    log = tmp_path / f"static-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _wait_for(url + "/", process, log)
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)


def _sealed(ledger: Path) -> bool:
    store = open_store(str(ledger), readonly=True)
    try:
        row = store.latest_checkpoint()
        return row is not None and row.size == store.size()
    finally:
        store.close()


@contextmanager
def public_log(ledger: Path, key: Path, tmp_path: Path) -> Iterator[str]:
    """``lineage serve --public-log`` on ``ledger``, once it has sealed what it appends at start; stopped
    (SIGTERM, so the database is closed cleanly) on exit."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [LINEAGE, "serve", "--ledger", str(ledger), "--log-key", str(key), "--port", str(port), "--public-log"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        deadline = time.monotonic() + 30
        while not _sealed(ledger):
            assert time.monotonic() < deadline, "serve did not seal its own entries within 30 s"
            time.sleep(0.1)  # polling a condition with a deadline
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)

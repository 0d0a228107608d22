"""``lineage emit``: JSONL in, through the emitter SDK, to a ledger server running as a real process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.model import encode_event
from lineage_ledger.emitter.spool import DiskSpool
from lineage_ledger.keys import write_signer_key
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.emitter.helpers import WAIT_S, create_ledger, recorded_events, sequence, sequenced_event

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "llk_cli_test_key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The stand-in ledger service (tests/emitter/ledger_server.py) in its own process."""

    def __init__(self, db: Path, port: int, log: Path) -> None:
        self.db, self.port, self.log = db, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        with self.log.open("a") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.emitter.ledger_server", str(self.db), str(self.port), API_KEY],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "ready\n", self.log.read_text()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=WAIT_S)
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cli-emit")
    create_ledger(root / "ledger.db")
    running = Server(root / "ledger.db", _free_port(), root / "server.err")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "producer.key"
    write_signer_key(path, make_producer_signer())
    return path


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEAGE_API_KEY", API_KEY)


def _jsonl(path: Path, label: str, count: int, *, bad_lines: dict[int, str] | None = None) -> Path:
    lines = [msgspec.json.encode(sequenced_event(label, n)).decode() for n in range(count)]
    for at, text in sorted((bad_lines or {}).items()):
        lines.insert(at, text)
    path.write_text("\n".join(lines) + "\n\n")
    return path


def _emit(url: str, key: Path, *extra: str) -> list[str]:
    return ["emit", "--url", url, "--producer", PRODUCER, "--key", str(key), "--key-id", PRODUCER_KEY_ID, *extra]


def _of(label: str, db: Path) -> list[tuple[str, int]]:
    return [item for item in sequence(recorded_events(db)) if item[0] == label]


def test_emit_sends_every_line_in_order(
    server: Server, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _jsonl(tmp_path / "events.jsonl", "cli", 250)
    code = main(_emit(server.url, key_file, "--spool", str(tmp_path / "spool"), "--batch", "64", "--json", str(events)))
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert (summary["lines"], summary["sent"], summary["pending"], summary["delivered"]) == (250, 250, 0, True)
    assert _of("cli", server.db) == [("cli", n) for n in range(250)]


def test_emit_reports_bad_lines_by_number_and_sends_the_rest(
    server: Server, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4eHh4eHh4In0.sig"
    events = _jsonl(
        tmp_path / "events.jsonl",
        "bad",
        5,
        bad_lines={1: "{not json", 3: json.dumps({"kind": "token", "token_id": jwt})},
    )
    code = main(_emit(server.url, key_file, "--json", str(events)))
    captured = capsys.readouterr()
    assert code == 2
    assert json.loads(captured.out)["invalid"] == 2
    assert "line 2" in captured.err
    assert "line 4" in captured.err
    assert jwt not in captured.err
    assert _of("bad", server.db) == [("bad", n) for n in range(5)]


def test_emit_spools_while_the_ledger_is_down_and_the_next_run_delivers(
    key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_ledger(tmp_path / "ledger.db")
    down = Server(tmp_path / "ledger.db", _free_port(), tmp_path / "server.err")
    spool = tmp_path / "spool"
    events = _jsonl(tmp_path / "events.jsonl", "later", 40)
    code = main(_emit(down.url, key_file, "--spool", str(spool), "--timeout", "0.3", "--json", str(events)))
    first = json.loads(capsys.readouterr().out)
    assert code == 3
    assert (first["sent"], first["pending"], first["dropped"]) == (0, 40, 0)
    down.start()
    try:
        # A real process this time, fed from a pipe with nothing new: it replays the spool.
        lineage = Path(sys.executable).with_name("lineage")
        done = subprocess.run(
            [str(lineage), *_emit(down.url, key_file, "--spool", str(spool), "--json")],
            input="",
            capture_output=True,
            text=True,
            timeout=WAIT_S * 2,
            check=False,
        )
    finally:
        down.stop()
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    assert (second["lines"], second["sent"], second["pending"]) == (0, 40, 0)
    assert _of("later", tmp_path / "ledger.db") == [("later", n) for n in range(40)]


def test_a_refused_api_key_keeps_events_in_the_spool(
    server: Server, key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LINEAGE_API_KEY", "llk_wrong")
    events = _jsonl(tmp_path / "events.jsonl", "denied", 3)
    code = main(
        _emit(server.url, key_file, "--spool", str(tmp_path / "spool"), "--timeout", "0.3", "--json", str(events))
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 3
    assert (summary["sent"], summary["dead_lettered"], summary["pending"]) == (0, 0, 3)
    assert summary["retried"] >= 1
    assert _of("denied", server.db) == []


def test_emitting_again_while_events_wait_in_the_spool_records_each_once_and_exits_0(
    key_file: Path, tmp_path: Path
) -> None:
    create_ledger(tmp_path / "ledger.db")
    ledger = Server(tmp_path / "ledger.db", _free_port(), tmp_path / "server.err")
    spool = tmp_path / "spool"
    events = _jsonl(tmp_path / "events.jsonl", "again", 40)
    lineage = Path(sys.executable).with_name("lineage")

    def emit(*extra: str, stdin: str | None = None) -> tuple[int, dict[str, object]]:
        command = [str(lineage), *_emit(ledger.url, key_file, "--spool", str(spool), "--json", *extra)]
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=WAIT_S * 2, check=False)
        return done.returncode, json.loads(done.stdout)

    # The ledger is down: two runs of the same file leave the events in the spool once.
    for run in range(2):
        code, summary = emit("--timeout", "0.3", str(events))
        assert code == 3, summary
        assert (summary["sent"], summary["pending"], summary["dropped"]) == (0, 40, 0), summary
        assert summary["absorbed"] == 40 * run
    ledger.start()
    try:
        code, summary = emit(stdin="")  # nothing new: delivers what waits in the spool
    finally:
        ledger.stop()
    assert code == 0, summary
    assert (summary["sent"], summary["dead_lettered"], summary["pending"]) == (40, 0, 0), summary
    assert not (spool / "dead-letters.jsonl").exists()
    assert _of("again", tmp_path / "ledger.db") == [("again", n) for n in range(40)]


def test_a_spool_holding_an_event_twice_sends_it_once(key_file: Path, tmp_path: Path) -> None:
    """A spool written before records were keyed by event id may hold repeats: a batch never does."""
    create_ledger(tmp_path / "ledger.db")
    ledger = Server(tmp_path / "ledger.db", _free_port(), tmp_path / "server.err")
    spool = tmp_path / "spool"
    records = [encode_event(sequenced_event("twice", n)) for n in range(5)]
    old = DiskSpool(spool)
    old.append(records)
    old.append(records)  # appended without asking absent(): as an older emitter did
    old.close()
    lineage = Path(sys.executable).with_name("lineage")
    ledger.start()
    try:
        done = subprocess.run(
            [str(lineage), *_emit(ledger.url, key_file, "--spool", str(spool), "--json")],
            input="",
            capture_output=True,
            text=True,
            timeout=WAIT_S * 2,
            check=False,
        )
    finally:
        ledger.stop()
    summary = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert (summary["sent"], summary["absorbed"], summary["dead_lettered"]) == (5, 5, 0), summary
    assert _of("twice", tmp_path / "ledger.db") == [("twice", n) for n in range(5)]

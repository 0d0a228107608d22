"""The ``lineage`` command end to end: init, ingest, verify, checkpoint, prove, trace, demo and bench.

Most commands run in-process through ``main(argv)`` with captured output; one runs as a real process of the
installed console script. Proofs printed by the CLI are checked with the pure verifiers against the signed
checkpoints it prints, the way an outside auditor would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.entry import EventEntry, decode_entry
from lineage_ledger.core.merkle import verify_consistency, verify_inclusion
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note, parse_verifier_key
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, load_signer
from lineage_ledger.store import open_store
from tests.conftest import token_event, token_id

ORIGIN = "cli.test.lineage-ledger.local/log"
T0 = 1_763_000_000_000_000_000
S = 1_000_000_000
PARENT, CHILD, OTHER, LATER = (token_id(f"cli-{name}") for name in ("parent", "child", "other", "later"))

# (event type, token, payload) in file order; log index = 1 + position (index 0 is the CLI's producer key).
STORY: list[tuple[str, str, dict[str, Any]]] = [
    ("ISSUED", PARENT, {"user_id": "alice", "scopes": ("read", "write")}),
    ("USED", PARENT, {"resource": "/v1/profile", "outcome": "ALLOW"}),
    ("ROTATED", CHILD, {"parent_token_id": PARENT}),
    ("USED", CHILD, {"resource": "/v1/cart", "outcome": "ALLOW"}),
    ("REVOKED", CHILD, {"reason": "logout"}),
    ("USED", CHILD, {"resource": "/v1/orders", "outcome": "ALLOW", "ip": "203.0.113.66"}),  # after REVOKED
    ("ISSUED", OTHER, {"user_id": "bob"}),
    ("USED", OTHER, {"resource": "/v1/search", "outcome": "DENY"}),
]
MORE: list[tuple[str, str, dict[str, Any]]] = [
    ("ISSUED", LATER, {"user_id": "carol"}),
    ("USED", LATER, {"resource": "/v1/profile", "outcome": "ALLOW"}),
    ("REVOKED", LATER, {}),
]


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_KEY_ENV_VAR, raising=False)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass(frozen=True)
class CliLedger:
    path: Path
    verifier_key: str

    @property
    def verifier(self) -> NoteVerifier:
        return parse_verifier_key(self.verifier_key)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def canonical_story(story: list[tuple[str, str, dict[str, Any]]], start_ns: int) -> list[bytes]:
    return [token_event(kind, token, start_ns + i * S, **payload) for i, (kind, token, payload) in enumerate(story)]


def write_jsonl(path: Path, events: list[bytes]) -> Path:
    """One event per line, keys in reverse order and with spaces: valid JSON, but not the canonical form."""
    lines = []
    for event in events:
        value = json.loads(event)
        lines.append(json.dumps(dict(sorted(value.items(), reverse=True)), separators=(", ", ": ")))
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def ledger_size(path: Path) -> int:
    store = open_store(str(path), readonly=True)
    try:
        return store.size()
    finally:
        store.close()


def signed_checkpoint(note: str, verifier: NoteVerifier) -> Checkpoint:
    text, _ = open_note(note, [verifier])
    return Checkpoint.from_text(text)


@pytest.fixture
def cli_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CliLedger:
    path = tmp_path / "ledger.db"
    result = run(capsys, "init", "--ledger", str(path), "--origin", ORIGIN, "--json")
    assert result.code == 0, result.err
    return CliLedger(path, result.json()["verifier_key"])


@pytest.fixture
def story_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "story.jsonl", canonical_story(STORY, T0))


@pytest.fixture
def ingested(cli_ledger: CliLedger, story_file: Path, capsys: pytest.CaptureFixture[str]) -> CliLedger:
    result = run(capsys, "ingest", str(story_file), "--ledger", str(cli_ledger.path), "--json")
    assert result.code == 0, result.err
    return cli_ledger


# -- init and ingest ---------------------------------------------------------------------------------------


def test_init_creates_ledger_and_private_keys(cli_ledger: CliLedger) -> None:
    log_key = cli_ledger.path.with_name("ledger.db.key")
    producer_key = cli_ledger.path.with_name("ledger.db.producer.key")
    for key_file in (log_key, producer_key):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    signer = load_signer(log_key)
    assert cli_ledger.verifier.public_key == signer.public_key
    assert cli_ledger.verifier.name == ORIGIN
    assert ledger_size(cli_ledger.path) == 1  # the CLI's own producer key, registered as an entry


def test_init_refuses_an_existing_ledger(cli_ledger: CliLedger, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "init", "--ledger", str(cli_ledger.path), "--origin", ORIGIN)
    assert result.code == 3
    assert "already initialised" in result.err


def test_ingest_canonicalises_and_summarises(
    cli_ledger: CliLedger, story_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "ingest", str(story_file), "--ledger", str(cli_ledger.path), "--json")
    assert result.code == 0, result.err
    summary = result.json()
    size = 1 + len(STORY) + 1  # key entry, the events, the seal that closes the block
    assert {k: summary[k] for k in ("events", "recorded", "duplicates", "violations")} == {
        "events": len(STORY),
        "recorded": len(STORY),
        "duplicates": 0,
        "violations": 1,
    }
    assert summary["size"] == summary["sealed_size"] == summary["checkpoint_size"] == size
    # What the log committed to is the canonical form of each line, whatever order the file had.
    store = open_store(str(cli_ledger.path), readonly=True)
    try:
        committed = [decode_entry(store.entry(1 + i).body) for i in range(len(STORY))]
    finally:
        store.close()
    originals = [json.loads(line) for line in story_file.read_text("utf-8").splitlines()]
    for entry, original in zip(committed, originals, strict=True):
        assert isinstance(entry, EventEntry)
        assert bytes(entry.event) == json.dumps(original, sort_keys=True, separators=(",", ":")).encode()


def _with_float(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "schema_version": 1.5}


def _without_occurred_at(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "occurred_at"}


# case -> (1-based line spoiled, the field the error must name, how the line is spoiled)
BAD_LINES: dict[str, tuple[int, str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "float": (2, "schema_version", _with_float),
    "missing_field": (3, "occurred_at", _without_occurred_at),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_ingest_rejects_a_bad_line_and_writes_nothing(
    cli_ledger: CliLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    line, field, spoil = BAD_LINES[case]
    events = [json.loads(e) for e in canonical_story(STORY, T0)]
    events[line - 1] = spoil(events[line - 1])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(e) + "\n" for e in events), "utf-8")
    before = ledger_size(cli_ledger.path)
    result = run(capsys, "ingest", str(bad), "--ledger", str(cli_ledger.path), "--json")
    assert result.code == 2
    assert f"line {line}" in result.err
    assert field in result.err
    assert result.out == ""
    assert ledger_size(cli_ledger.path) == before


def test_reingest_records_nothing_new(
    ingested: CliLedger, story_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ledger_size(ingested.path)
    result = run(capsys, "ingest", str(story_file), "--ledger", str(ingested.path), "--json")
    assert result.code == 0, result.err
    summary = result.json()
    assert (summary["recorded"], summary["duplicates"], summary["violations"]) == (0, len(STORY), 0)
    assert summary["checkpoint_size"] is None  # nothing new, so no new seal
    assert summary["size"] == before == ledger_size(ingested.path)


def test_ingest_records_every_event_but_one_whose_event_id_holds_other_bytes(
    ingested: CliLedger, story_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ledger_size(ingested.path)
    fresh = [json.loads(e) for e in canonical_story(STORY, T0 + 10**12)]  # new event ids ...
    clash = json.loads(story_file.read_text("utf-8").splitlines()[0])
    clash["payload"]["client_id"] = "someone-else"  # ... and a recorded one with other bytes
    events = [*fresh[:2], clash, *fresh[2:]]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(e) + "\n" for e in events), "utf-8")
    result = run(capsys, "ingest", str(mixed), "--ledger", str(ingested.path), "--batch", "2", "--json")
    assert result.code == 3
    assert "event 3 of the file: ConflictError: its event id is already recorded at index 1" in result.err
    summary = result.json()
    assert (summary["conflicts"], summary["refused_batches"]) == (1, 0)
    assert summary["recorded"] == len(fresh)  # found before any batch was signed: only the clash is left out
    assert ledger_size(ingested.path) == before + summary["recorded"] + 1  # and a seal


# -- verify, checkpoint, prove ------------------------------------------------------------------------------


def test_verify_with_key(ingested: CliLedger, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "verify", "--ledger", str(ingested.path), "--key", ingested.verifier_key, "--json")
    assert result.code == 0, result.out
    report = result.json()
    assert report["ok"] is True
    assert report["key_source"] == "given"
    assert report["size"] == 1 + len(STORY) + 1
    assert report["problems"] == []


def test_checkpoint_prints_a_signed_note(ingested: CliLedger, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "checkpoint", "--ledger", str(ingested.path))
    assert result.code == 0, result.err
    # C2SP signed note: the checkpoint text, a blank line, then "— <key name> <base64 signature>" lines.
    text, signatures = result.out.split("\n\n")
    assert re.fullmatch(rf"— {re.escape(ORIGIN)} [A-Za-z0-9+/]+=*\n", signatures)
    checkpoint = signed_checkpoint(result.out, ingested.verifier)
    assert text + "\n" == checkpoint.to_text()
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 1 + len(STORY) + 1)


def test_checkpoint_verifier_key(ingested: CliLedger, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "checkpoint", "--ledger", str(ingested.path), "--verifier-key")
    assert result.code == 0, result.err
    line = result.out.strip()
    match = re.fullmatch(rf"{re.escape(ORIGIN)}\+([0-9a-f]{{8}})\+([A-Za-z0-9+/]+=*)", line)
    assert match is not None, line
    public_key = load_signer(ingested.path.with_name("ledger.db.key")).public_key
    assert base64.b64decode(match.group(2)) == b"\x01" + public_key
    key_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public_key).digest()[:4]
    assert match.group(1) == key_id.hex()
    assert line == ingested.verifier_key


def test_prove_inclusion(ingested: CliLedger, story_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    position = 5  # the USED after REVOKED
    index = 1 + position
    result = run(capsys, "prove", str(index), "--ledger", str(ingested.path), "--json")
    assert result.code == 0, result.err
    proof = result.json()
    checkpoint = signed_checkpoint(proof["checkpoint"], ingested.verifier)
    assert proof["tree_size"] == checkpoint.size == 1 + len(STORY) + 1
    entry_bytes = proof["entry"].encode()
    leaf = hashlib.sha256(b"\x00" + entry_bytes).digest()
    assert proof["leaf_hash"] == leaf.hex()
    path = [bytes.fromhex(h) for h in proof["inclusion_path"]]
    verify_inclusion(leaf, index, checkpoint.size, path, checkpoint.root_hash)
    entry = decode_entry(entry_bytes)
    assert isinstance(entry, EventEntry)
    assert entry.index == index
    line = story_file.read_text("utf-8").splitlines()[position]
    assert json.loads(bytes(entry.event)) == json.loads(line)


def test_prove_consistency(ingested: CliLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = 1 + len(STORY) + 1
    more = write_jsonl(tmp_path / "more.jsonl", canonical_story(MORE, T0 + 100 * S))
    assert run(capsys, "ingest", str(more), "--ledger", str(ingested.path)).code == 0
    new = old + len(MORE) + 1
    result = run(capsys, "prove", "--consistency", str(old), str(new), "--ledger", str(ingested.path), "--json")
    assert result.code == 0, result.err
    proof = result.json()
    old_cp = signed_checkpoint(proof["old_checkpoint"], ingested.verifier)
    new_cp = signed_checkpoint(proof["new_checkpoint"], ingested.verifier)
    assert (old_cp.size, new_cp.size) == (old, new)
    hashes = [bytes.fromhex(h) for h in proof["proof"]]
    verify_consistency(old, new, old_cp.root_hash, new_cp.root_hash, hashes)


# -- trace --------------------------------------------------------------------------------------------------


def _indices(token: str) -> list[int]:
    return [1 + i for i, (_, t, _) in enumerate(STORY) if t == token]


def test_trace_child_shows_timeline_violation_and_parent(
    ingested: CliLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "trace", CHILD, "--ledger", str(ingested.path), "--json")
    assert result.code == 0, result.err
    trace = result.json()
    assert trace["token_id"] == CHILD
    assert trace["chain_ok"] is True
    steps = trace["timeline"]
    assert [s["index"] for s in steps] == _indices(CHILD)
    assert [s["event_type"] for s in steps] == ["ROTATED", "USED", "REVOKED", "USED"]
    assert [s["verdict"] for s in steps] == ["ok", "ok", "ok", "token.use_after_revoke"]
    assert {s["status"] for s in steps} == {"sealed"}
    assert trace["violations"] == [{"index": _indices(CHILD)[-1], "rule": "token.use_after_revoke"}]
    assert trace["parents"] == [PARENT]
    assert trace["resources"] == ["/v1/cart", "/v1/orders"]


def test_trace_parent_shows_its_rotated_child(ingested: CliLedger, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "trace", "token:" + PARENT, "--ledger", str(ingested.path), "--json")
    assert result.code == 0, result.err
    trace = result.json()
    assert [s["event_type"] for s in trace["timeline"]] == ["ISSUED", "USED"]
    assert trace["violations"] == []
    assert trace["children"] == [{"token_id": CHILD, "event_type": "ROTATED", "index": _indices(CHILD)[0]}]
    assert trace["parents"] == []


def test_trace_of_an_unknown_token_fails(ingested: CliLedger, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "trace", token_id("never-seen"), "--ledger", str(ingested.path), "--json")
    assert result.code == 3
    assert "no events" in result.err


# -- demo, bench, and the installed script ------------------------------------------------------------------


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo" / "demo.db"
    result = run(capsys, "demo", "--tokens", "300", "--ledger", str(path), "--json")
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["verified"] is True
    assert summary["verify_problems"] == []
    assert summary["tokens"] >= 300
    assert summary["violations_flagged"] >= summary["violations_planted"] > 0
    assert summary["entries"] == ledger_size(path)
    assert signed_checkpoint(summary["checkpoint"], _stored_verifier(path)).size == summary["entries"]


def _stored_verifier(path: Path) -> NoteVerifier:
    store = open_store(str(path), readonly=True)
    try:
        return parse_verifier_key(store.meta()["verifier_key"])
    finally:
        store.close()


def test_bench_reports_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "bench", "--events", "3000", "--json")
    assert result.code == 0, result.err
    figures = result.json()
    for key in ("ingest_events_per_s", "verify_events_per_s", "floor_events_per_s", "ingest_to_floor", "peak_rss_mb"):
        assert isinstance(figures[key], int | float), key
        assert figures[key] > 0, key
    assert figures["events"] == 3000


def test_installed_console_script_verifies(ingested: CliLedger) -> None:
    script = Path(sys.executable).parent / "lineage"
    assert script.is_file()
    done = subprocess.run(
        [str(script), "verify", "--ledger", str(ingested.path), "--key", ingested.verifier_key, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True

"""The README flow through the command line, on SQLite and PostgreSQL: archive, then every kind of question
(timeline, family, blast radius, resource window, state-at, active-at, evidence, export) answers as it did
before from hot and archive together and names the tier; an evidence bundle of archived entries verifies
offline; after expiry, evidence is refused naming the policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.keys import write_signer_key
from lineage_ledger.ledger.log_keys import read_key_chain
from lineage_ledger.store import open_store
from tests.archive.helpers import CHILD, NEW, OLD, build
from tests.conftest import make_log_signer

QUESTIONS = {
    "timeline": ["query", "timeline", OLD],
    "family": ["query", "family", CHILD],
    "blast-radius": ["query", "blast-radius", NEW],
    "resource": ["query", "resource", "/old"],
    "state-at": ["query", "state-at", OLD, "--at", "2100-01-01T00:00:00Z"],
}


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_questions_answer_across_tiers_and_say_which(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = build(ledger_url)
    questions = {**QUESTIONS, "active-at": ["query", "active-at", "--at", built.cut, "--user", "nina"]}
    key = tmp_path / "log.key"
    write_signer_key(key, make_log_signer())
    common = ["--ledger", ledger_url]
    before = {name: _run(capsys, *q, *common) for name, q in questions.items()}
    assert all(code == 0 and answer["tier"] == ["hot"] for code, answer in before.values()), before
    bundle = tmp_path / "old.json"
    assert _run(capsys, "evidence", "export", OLD, *common, "--output", str(bundle))[0] == 0

    code, done = _run(
        capsys, "archive", *common, "--log-key", str(key), "--to", str(tmp_path / "arch"), "--before", built.cut
    )
    assert code == 0
    assert done["entries"] == built.archived_last + 1
    assert done["bytes_per_entry"] > 0

    for name, q in questions.items():
        code, answer = _run(capsys, *q, *common)
        assert code == 0, name
        assert answer["answer"] == before[name][1]["answer"], name
        assert answer["evidence"] == before[name][1]["evidence"], name
        assert "archive" in answer["tier"], (name, answer["tier"])
    assert _run(capsys, "query", "timeline", OLD, *common)[1]["tier"] == ["archive"]
    assert _run(capsys, "query", "timeline", NEW, *common)[1]["tier"] == ["hot", "archive"]

    # evidence of archived entries: exported from the archive, checked offline with no database
    archived_bundle = tmp_path / "old-archived.json"
    code, exported = _run(capsys, "evidence", "export", OLD, *common, "--output", str(archived_bundle))
    assert code == 0
    assert "archive" in exported["tier"]  # the entries; the seals and keys it cites are hot
    assert json.loads(archived_bundle.read_bytes())["entries"] == json.loads(bundle.read_bytes())["entries"]
    store = open_store(ledger_url, readonly=True)
    try:
        log_key = str(read_key_chain(store).original)
    finally:
        store.close()
    code, checked = _run(capsys, "evidence", "verify", str(archived_bundle), "--key", log_key)
    assert code == 0, checked
    code, exported = _run(capsys, "export", "jsonl", "--token-id", CHILD, *common, "-o", str(tmp_path / "x.jsonl"))
    assert code == 0
    assert "archive" in exported["tier"]

    # after expiry: evidence would be incomplete, so it is refused, naming the policy
    assert (
        _run(
            capsys,
            "retention",
            "set",
            *common,
            "--log-key",
            str(key),
            "--name",
            "p1",
            "--hot-days",
            "1",
            "--keep-days",
            "1",
        )[0]
        == 0
    )
    assert _run(capsys, "retention", "apply", *common, "--log-key", str(key), "--now", "2100-01-01T00:00:00Z")[0] == 0
    capsys.readouterr()
    assert main(["evidence", "export", OLD, *common, "--output", str(tmp_path / "gone.json")]) != 0
    said = capsys.readouterr()
    assert "expired under retention policy 'p1'" in said.out + said.err
    assert not (tmp_path / "gone.json").exists()

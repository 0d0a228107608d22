"""Getting events in: the committed JSON Schema, ``lineage events example`` into ``lineage ingest``, and one
token secret shared by ``lineage init``, the example producer and ``lineage serve``."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lineage_ledger.cli._common import token_secrets_from as _token_secret
from lineage_ledger.core.crypto import Signer, token_fingerprint
from lineage_ledger.core.event_schema import event_json_schema
from lineage_ledger.keys import load_signer
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.service.app import create_app
from lineage_ledger.service.auth import ApiKeyStore, load_token_secret
from lineage_ledger.store import open_store
from lineage_ledger.token_secrets import TokenSecrets
from tests.cli.test_cli import Run, run

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "example.com/events-test"


def test_the_committed_schema_is_the_one_the_models_generate() -> None:
    committed = json.loads((REPO / "docs" / "event.schema.json").read_text(encoding="utf-8"))
    assert committed == event_json_schema(), "regenerate it: lineage events schema -o docs/event.schema.json"


def _fields(schema: object) -> set[str]:
    if isinstance(schema, dict):
        names = set(schema.get("properties", {})) if isinstance(schema.get("properties"), dict) else set()
        return names | {n for value in schema.values() for n in _fields(value)}
    if isinstance(schema, list):
        return {n for value in schema for n in _fields(value)}
    return set()


def test_every_field_of_the_schema_is_documented() -> None:
    text = (REPO / "docs" / "events.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_]+)`", text))
    assert _fields(event_json_schema()) - documented == set()


def test_the_schema_command_prints_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = run(capsys, "events", "schema")
    assert result.code == 0, result.err
    assert json.loads(result.out) == event_json_schema()


def _init(capsys: pytest.CaptureFixture[str], path: Path) -> Run:
    result = run(capsys, "init", "--ledger", str(path), "--origin", ORIGIN)
    assert result.code == 0, result.err
    return result


def test_init_creates_the_token_secret_beside_the_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    result = _init(capsys, path)
    secret_file = tmp_path / "ledger.db.secret"
    assert str(secret_file) in result.out
    assert (secret_file.stat().st_mode & 0o777) == 0o600
    # lineage serve resolves the same secret (no --token-secret-file, no $LINEAGE_TOKEN_SECRET)
    served = _token_secret(argparse.Namespace(token_secret_file=None, ledger=str(path)))
    assert served == TokenSecrets.single(load_token_secret(secret_file))


def test_example_events_ingest_cleanly_and_serve_recognises_their_tokens(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LINEAGE_TOKEN_SECRET", raising=False)
    path = tmp_path / "ledger.db"
    _init(capsys, path)
    events = tmp_path / "events.jsonl"
    made = run(capsys, "events", "example", "-o", str(events), "--ledger", str(path), "--json")
    assert made.code == 0, made.err
    summary = made.json()
    lines = events.read_bytes().splitlines()
    assert len(lines) == summary["events"] > 10
    ingested = run(capsys, "ingest", str(events), "--ledger", str(path), "--json")
    assert ingested.code == 0, ingested.err

    secret = load_token_secret(tmp_path / "ledger.db.secret")
    raw = summary["raw_tokens"]
    store = open_store(str(path), readonly=True)
    try:
        lineage = Lineage(store)
        for role in raw:
            records = lineage.timeline(token_fingerprint(secret, raw[role]))
            assert records
            assert [r.verdict for r in records] == ["ok"] * len(records)
    finally:
        store.close()

    # the service, given the secret serve reads by default, introspects the example's raw tokens
    served = _token_secret(argparse.Namespace(token_secret_file=None, ledger=str(path)))
    keys = ApiKeyStore.in_memory()
    auditor = keys.create("auditor")[1]
    with Ledger.open(str(path), make_log_signer_for(path)) as ledger:
        app = create_app(ledger, api_keys=keys, token_secret=served)
        with TestClient(app) as client:

            def active(role: str) -> bool:
                response = client.post(
                    "/v1/introspect", data={"token": raw[role]}, headers={"Authorization": f"Bearer {auditor}"}
                )
                assert response.status_code == 200, response.text
                return bool(response.json()["active"])

            assert active("bob")  # issued, never ended
            assert not active("refresh")  # rotated away
            assert not active("rotated")  # revoked at logout
            assert not active("access")  # derived from the revoked refresh token: the cascade


def make_log_signer_for(path: Path) -> Signer:
    """The log signer ``lineage init`` wrote beside the ledger."""
    return load_signer(path.with_name(path.name + ".key"))

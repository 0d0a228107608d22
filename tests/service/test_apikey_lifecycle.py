"""API keys over their whole life: create (with expiry), rotate (with a grace period), revoke, list; through
``lineage apikey`` as real processes and through a real ``lineage serve`` over HTTP; each change a ledger
entry, no secret stored raw, and a revoked key refused on its very next request."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lineage_ledger.core.entry import ApiKeyEntry, decode_entry
from lineage_ledger.errors import ConflictError, InputError, NotFoundError
from lineage_ledger.service.auth import ApiKeyStore, utc_time
from lineage_ledger.store import open_store
from tests.service.conftest import Harness
from tests.service.serving import Server
from tests.service.test_server import server  # noqa: F401 - the fixture

LINEAGE = str(Path(sys.executable).parent / "lineage")


def lineage(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([LINEAGE, *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def recorded_changes(db: Path | str) -> list[tuple[str, str]]:
    """(action, key id) of every apikey entry in the ledger, in log order."""
    store = open_store(str(db), readonly=True)
    try:
        out: list[tuple[str, str]] = []
        for row in store.entries(0, store.size()):
            entry = decode_entry(row.body)
            if isinstance(entry, ApiKeyEntry):
                assert row.subject == f"apikey:{entry.change.key_id}"
                out.append((entry.change.action, entry.change.key_id))
        return out
    finally:
        store.close()


class Clock:
    """A settable wall clock for the key store (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_expiry_rotation_grace_and_revocation_in_the_store(tmp_path: Path) -> None:
    clock = Clock(1_900_000_000.0)
    path = tmp_path / "keys.json"
    store = ApiKeyStore.load(path, clock=clock)
    changes: list[str] = []
    principal, first = store.create(
        "auditor", expires_at=utc_time(clock.now + 100), record=lambda c: changes.append(c.action)
    )
    assert store.authenticate(first) == principal
    clock.now += 100
    assert store.authenticate(first) is None  # expired
    with pytest.raises(ConflictError, match="expired"):
        store.rotate(principal.key_id, grace_seconds=10)
    with pytest.raises(InputError, match="expires_at"):
        store.create("auditor", expires_at=utc_time(clock.now - 1))

    principal, old = store.create("admin", record=lambda c: changes.append(c.action))
    info, new = store.rotate(principal.key_id, grace_seconds=60, record=lambda c: changes.append(c.action))
    assert info.previous_until == utc_time(clock.now + 60)
    assert store.authenticate(new) == principal
    assert store.authenticate(old) == principal  # within the grace period
    assert ApiKeyStore.load(path, clock=clock).authenticate(old) == principal  # as another process reads it
    clock.now += 60
    assert store.authenticate(old) is None
    assert store.authenticate(new) == principal
    _, newest = store.rotate(principal.key_id, grace_seconds=0)
    assert store.authenticate(new) is None  # no grace at all
    assert store.authenticate(newest) == principal

    def refuse(change: object) -> None:
        raise ConflictError("the ledger refused")

    with pytest.raises(ConflictError, match="ledger refused"):
        store.revoke(principal.key_id, record=refuse)
    assert store.authenticate(newest) == principal  # nothing changed
    store.revoke(principal.key_id, record=lambda c: changes.append(c.action))
    assert store.authenticate(newest) is None
    assert ApiKeyStore.load(path, clock=clock).authenticate(newest) is None
    with pytest.raises(ConflictError, match="revoked"):
        store.revoke(principal.key_id)
    with pytest.raises(NotFoundError):
        store.revoke("0123456789abcdef")
    assert changes == ["create", "create", "rotate", "revoke"]
    assert [i.state(store.now()) for i in store.key_infos()] == ["expired", "revoked"]

    text = path.read_text()
    for raw in (first, old, new, newest):
        assert raw not in text
        assert raw.split("_", 2)[2] not in text
    assert hashlib.sha256(newest.encode()).hexdigest() in text


def test_a_version_1_key_file_is_still_read(tmp_path: Path) -> None:
    raw = "llk_0123456789abcdef_" + "A" * 43
    path = tmp_path / "keys.json"
    record = {"key_id": "0123456789abcdef", "role": "auditor", "producer": None, "created_at": "2026-01-01T00:00:00Z"}
    document = {
        "format": "lineage-ledger-apikeys/1",
        "keys": [{**record, "sha256": hashlib.sha256(raw.encode()).hexdigest()}],
    }
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    store = ApiKeyStore.load(path)
    assert store.authenticate(raw) is not None
    store.revoke("0123456789abcdef")
    assert json.loads(path.read_text())["format"] == "lineage-ledger-apikeys/2"  # older readers refuse it
    assert ApiKeyStore.load(path).authenticate(raw) is None


def test_cli_lifecycle_records_every_change_in_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    lineage("init", "--ledger", str(db))
    created = json.loads(
        lineage("apikey", "create", "--ledger", str(db), "--role", "auditor", "--expires-in", "30d", "--json").stdout
    )
    key_id, first = created["key_id"], created["api_key"]
    assert created["state"] == "active"
    assert created["expires_at"] is not None
    rotated = json.loads(lineage("apikey", "rotate", key_id, "--ledger", str(db), "--grace", "2h", "--json").stdout)
    assert rotated["key_id"] == key_id
    assert rotated["api_key"] != first
    keys = ApiKeyStore.load(f"{db}.apikeys.json")
    assert keys.authenticate(first) is not None
    assert keys.authenticate(rotated["api_key"]) is not None
    lineage("apikey", "revoke", key_id, "--ledger", str(db))
    assert keys.authenticate(rotated["api_key"]) is None
    assert keys.authenticate(first) is None
    again = lineage("apikey", "revoke", key_id, "--ledger", str(db), check=False)
    assert again.returncode != 0
    assert "revoked" in again.stderr
    listed = json.loads(lineage("apikey", "list", "--ledger", str(db), "--json").stdout)
    assert [(k["key_id"], k["state"]) for k in listed] == [(key_id, "revoked")]
    assert "api_key" not in listed[0]

    assert recorded_changes(db) == [("create", key_id), ("rotate", key_id), ("revoke", key_id)]
    report = json.loads(lineage("verify", "--ledger", str(db), "--json").stdout)
    assert report["ok"], report["problems"]
    for file in tmp_path.iterdir():
        data = file.read_bytes()
        for raw in (first, rotated["api_key"]):
            assert raw.encode() not in data, file
            assert raw.split("_", 2)[2].encode() not in data, file

    bad = lineage("apikey", "create", "--ledger", str(db), "--role", "auditor", "--expires-in", "soon", check=False)
    assert bad.returncode == 2
    assert "--expires-in" in bad.stderr


def test_a_running_server_refuses_a_revoked_key_on_its_next_request(server: Server) -> None:  # noqa: F811
    admin = ApiKeyStore.load(f"{server.ledger}.apikeys.json").create("admin")[1]
    as_admin = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        created = client.post("/v1/apikeys", json={"role": "auditor", "expires_in": 3600}, headers=as_admin)
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        auditor = created.json()
        as_auditor = {"Authorization": f"Bearer {auditor['api_key']}"}
        assert client.get("/v1/checkpoints/latest", headers=as_auditor).status_code in (200, 404)
        assert client.get("/v1/apikeys", headers=as_auditor).status_code == 403  # admins only

        # rotation: with a grace period both secrets work; without one the old is refused at once
        rotated = client.post(f"/v1/apikeys/{auditor['key_id']}/rotate", json={"grace_seconds": 3600}, headers=as_admin)
        assert rotated.status_code == 200, rotated.text
        as_rotated = {"Authorization": f"Bearer {rotated.json()['api_key']}"}
        assert client.get("/v1/keys", headers=as_auditor).status_code == 200
        assert client.get("/v1/keys", headers=as_rotated).status_code == 200
        again = client.post(f"/v1/apikeys/{auditor['key_id']}/rotate", json={"grace_seconds": 0}, headers=as_admin)
        as_latest = {"Authorization": f"Bearer {again.json()['api_key']}"}
        assert client.get("/v1/keys", headers=as_rotated).status_code == 401
        assert client.get("/v1/keys", headers=as_latest).status_code == 200

        revoked = client.post(f"/v1/apikeys/{auditor['key_id']}/revoke", headers=as_admin)
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["state"] == "revoked"
        refused = client.get("/v1/keys", headers=as_latest)  # the very next request
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert client.post(f"/v1/apikeys/{auditor['key_id']}/revoke", headers=as_admin).status_code == 409
        assert client.post("/v1/apikeys/0123456789abcdef/revoke", headers=as_admin).status_code == 404
        listed = client.get("/v1/apikeys", headers=as_admin).json()
        assert {k["key_id"]: k["state"] for k in listed}[auditor["key_id"]] == "revoked"
        assert all("api_key" not in k and "sha256" not in k for k in listed)
    assert server.stop() == 0
    assert recorded_changes(server.ledger) == [
        ("create", auditor["key_id"]),
        ("rotate", auditor["key_id"]),
        ("rotate", auditor["key_id"]),
        ("revoke", auditor["key_id"]),
    ]
    report = json.loads(lineage("verify", "--ledger", str(server.ledger), "--json").stdout)
    assert report["ok"], report["problems"]


def test_an_api_key_change_reads_back_as_an_apikey_entry(service: Harness) -> None:
    index = service.size()
    created = service.client.post("/v1/apikeys", json={"role": "auditor"}, headers=service.auth("admin"))
    assert created.status_code == 201, created.text
    entry = service.client.get(f"/v1/entries/{index}", headers=service.auth("auditor")).json()
    assert entry["type"] == "apikey"
    body = json.loads(entry["entry"])
    assert body["change"] == {"action": "create", "key_id": created.json()["key_id"], "role": "auditor"}
    assert created.json()["api_key"] not in entry["entry"]


def test_the_service_verifies_and_serves_a_ledger_whose_log_key_was_rotated(service: Harness) -> None:
    from lineage_ledger.core.crypto import Ed25519Signer
    from lineage_ledger.core.note import NoteVerifier, open_note

    new = Ed25519Signer.generate(service.ledger.verifier.name)
    index = service.on_writer(lambda: service.ledger.rotate_log_key(new))
    report = service.client.post("/v1/verify", headers=service.auth("auditor")).json()
    assert report["ok"], report["problems"]
    latest = service.client.get("/v1/checkpoints/latest", headers=service.auth("auditor")).json()
    assert latest["size"] > index
    open_note(latest["note"], [NoteVerifier.from_public_key(new.name, new.public_key)])
    entry = service.client.get(f"/v1/entries/{index}", headers=service.auth("auditor")).json()
    assert entry["type"] == "log_key"

"""Who may call what: the authorisation matrix, the absence of any changing verb, and the API key store.

The matrix is written out here by hand, independently of the app's ENDPOINT_ROLES, so a change to either
shows up as a failure until both agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.errors import InputError, KeyringError
from lineage_ledger.service.app import ENDPOINT_ROLES, PUBLIC_ENDPOINTS
from lineage_ledger.service.auth import ApiKeyStore
from tests.conftest import token_event, token_events
from tests.service.conftest import TOKEN_SECRET, Harness

WHO = (None, "bad", "producer", "other_producer", "auditor", "admin")
"""No key, a well-formed but unknown key, then the four principals of the harness."""

Call = Callable[[Harness, dict[str, str]], httpx.Response]
Prepare = Callable[[Harness], Call]
"""Makes whatever the request needs (a fresh key to revoke...) and returns the request itself."""


def ready(call: Call) -> Prepare:
    return lambda _: call


def _form(path: str, raw: str) -> Call:
    return lambda h, auth: h.client.post(path, data={"token": raw}, headers=auth)


def _new_batch(h: Harness, auth: dict[str, str]) -> httpx.Response:
    envelope = h.batch(token_events(2, label=f"matrix-{time.monotonic_ns()}"))
    response: httpx.Response = h.client.post(
        "/v1/batches", content=envelope, headers={**auth, "Content-Type": "application/json"}
    )
    return response


def _new_key(h: Harness, auth: dict[str, str]) -> httpx.Response:
    signer = Ed25519Signer.generate("matrix")
    body = {"producer": "matrix", "key_id": f"matrix-{time.monotonic_ns()}", "public_key": signer.public_key.hex()}
    response: httpx.Response = h.client.post("/v1/keys", json=body, headers=auth)
    return response


def _revoke_key(h: Harness) -> Call:
    key_id = f"doomed-{time.monotonic_ns()}"
    h.on_writer(lambda: h.ledger.register_key("matrix", key_id, Ed25519Signer.generate("m").public_key))
    return lambda h, auth: h.client.post(f"/v1/keys/{key_id}/revoke", headers=auth)


def _throwaway_api_key(h: Harness, action: str) -> Call:
    """A fresh auditor API key (none of the matrix's principals) to rotate or revoke."""
    key_id = h.app.state.lineage.api_keys.create("auditor")[0].key_id
    return lambda h, auth: h.client.post(f"/v1/apikeys/{key_id}/{action}", headers=auth)


def _get_token_path(path: str) -> Call:
    """GET ``path`` with ``{t}`` replaced by the matrix token."""

    def call(h: Harness, auth: dict[str, str]) -> httpx.Response:
        response: httpx.Response = h.client.get(path.format(t=h.app.state.matrix_token), headers=auth)
        return response

    return call


AUDITOR_ONLY: dict[str | None, int] = {"auditor": 200}


OK, NO_KEY, DENIED = 200, 401, 403
MATRIX: list[tuple[str, Prepare, dict[str | None, int]]] = [
    # endpoint, request, {principal: status}; principals not named get DENIED (403), None and "bad" get 401
    ("GET /healthz", ready(lambda h, a: h.client.get("/healthz", headers=a)), dict.fromkeys(WHO, OK)),
    ("GET /readyz", ready(lambda h, a: h.client.get("/readyz", headers=a)), dict.fromkeys(WHO, OK)),
    ("GET /openapi.json", ready(lambda h, a: h.client.get("/openapi.json", headers=a)), dict.fromkeys(WHO, OK)),
    ("GET /docs", ready(lambda h, a: h.client.get("/docs", headers=a)), dict.fromkeys(WHO, OK)),
    ("POST /v1/batches", ready(_new_batch), {"producer": OK}),
    ("GET /v1/entries/{index}", ready(lambda h, a: h.client.get("/v1/entries/3", headers=a)), {"auditor": OK}),
    (
        "GET /v1/tokens/{token_id}/timeline",
        ready(lambda h, a: h.client.get(f"/v1/tokens/{h.app.state.matrix_token}/timeline", headers=a)),
        {"auditor": OK},
    ),
    (
        "GET /v1/proofs/inclusion",
        ready(lambda h, a: h.client.get("/v1/proofs/inclusion", params={"index": 3}, headers=a)),
        {"auditor": OK},
    ),
    (
        "GET /v1/proofs/consistency",
        ready(lambda h, a: h.client.get("/v1/proofs/consistency", params={"old": 5, "new": 5}, headers=a)),
        {"auditor": OK, "producer": OK, "other_producer": OK},
    ),
    ("GET /checkpoint", ready(lambda h, a: h.client.get("/checkpoint", headers=a)), {"auditor": OK}),
    ("GET /tile/{path}", ready(lambda h, a: h.client.get("/tile/0/000.p/1", headers=a)), {"auditor": OK}),
    (
        "GET /v1/checkpoints/latest",
        ready(lambda h, a: h.client.get("/v1/checkpoints/latest", headers=a)),
        {"auditor": OK, "producer": OK, "other_producer": OK},
    ),
    (
        "GET /v1/checkpoints/{size}",
        ready(lambda h, a: h.client.get("/v1/checkpoints/5", headers=a)),
        {"auditor": OK, "producer": OK, "other_producer": OK},
    ),
    ("GET /v1/keys", ready(lambda h, a: h.client.get("/v1/keys", headers=a)), {"auditor": OK, "admin": OK}),
    ("POST /v1/keys", ready(_new_key), {"admin": 201}),
    ("POST /v1/keys/{key_id}/revoke", _revoke_key, {"admin": OK}),
    ("GET /v1/apikeys", ready(lambda h, a: h.client.get("/v1/apikeys", headers=a)), {"admin": OK}),
    (
        "POST /v1/apikeys",
        ready(lambda h, a: h.client.post("/v1/apikeys", json={"role": "auditor"}, headers=a)),
        {"admin": 201},
    ),
    ("POST /v1/apikeys/{key_id}/rotate", lambda h: _throwaway_api_key(h, "rotate"), {"admin": OK}),
    ("POST /v1/apikeys/{key_id}/revoke", lambda h: _throwaway_api_key(h, "revoke"), {"admin": OK}),
    (
        "POST /v1/revoke",
        ready(_form("/v1/revoke", "matrix-raw-token")),
        {"producer": OK, "other_producer": OK, "admin": OK},
    ),
    (
        "POST /v1/introspect",
        ready(_form("/v1/introspect", "matrix-raw-token")),
        {"producer": OK, "other_producer": OK, "auditor": OK},
    ),
    ("POST /v1/verify", ready(lambda h, a: h.client.post("/v1/verify", headers=a)), {"auditor": OK}),
    # admin only; this ledger seals no personal data, so the admin's request is refused as bad input (422)
    (
        "POST /v1/subjects/export",
        ready(lambda h, a: h.client.post("/v1/subjects/export", json={"user": "u-1"}, headers=a)),
        {"admin": 422},
    ),
    (
        "POST /v1/subjects/erase",
        ready(lambda h, a: h.client.post("/v1/subjects/erase", json={"user": "u-1", "reason": "r"}, headers=a)),
        {"admin": 422},
    ),
    *[
        (endpoint, ready(_get_token_path(path)), AUDITOR_ONLY)
        for endpoint, path in [
            ("GET /v1/query/tokens/{token_id}/family", "/v1/query/tokens/{t}/family"),
            ("GET /v1/query/tokens/{token_id}/blast-radius", "/v1/query/tokens/{t}/blast-radius"),
            ("GET /v1/query/tokens/{token_id}/since-refresh", "/v1/query/tokens/{t}/since-refresh"),
            ("GET /v1/query/tokens/{token_id}/policy", "/v1/query/tokens/{t}/policy"),
            ("GET /v1/query/tokens/{token_id}/state", "/v1/query/tokens/{t}/state?at=1"),
            ("GET /v1/query/resources", "/v1/query/resources?resource=/x"),
            ("GET /v1/query/users/{user_id}/policy-changes", "/v1/query/users/u-1/policy-changes"),
            ("GET /v1/query/policies", "/v1/query/policies?at=1"),
            ("GET /v1/query/assets/{asset_id}/{direction}", "/v1/query/assets/a1/upstream"),
            ("GET /v1/evidence/{subject}", "/v1/evidence/{t}"),
            ("GET /v1/query/users/{user_id}/tokens", "/v1/query/users/u-1/tokens"),
            ("GET /v1/query/active-tokens", "/v1/query/active-tokens?at=1"),
        ]
    ],
]


def expected_status(endpoint: str, allowed: dict[str | None, int], who: str | None) -> int:
    if who in allowed:
        return allowed[who]
    return NO_KEY if who in (None, "bad") else DENIED


@pytest.fixture
def matrix_service(service: Harness) -> Harness:
    """The service with something to read: a token and a checkpoint of size 5."""
    tid = service.app.state.matrix_token = "f" * 64
    receipts = service.post_batch(service.batch([token_event("ISSUED", tid, time.time_ns())])).json()["receipts"]
    assert receipts[0]["index"] == 3
    service.seal()
    assert service.size() == 5
    service.api_keys["bad"] = "llk_0123456789abcdef_" + "A" * 43
    return service


def test_every_principal_against_every_endpoint(matrix_service: Harness) -> None:
    service = matrix_service
    covered = set()
    failures = []
    for endpoint, prepare, allowed in MATRIX:
        covered.add(endpoint)
        for who in WHO:
            call = prepare(service)
            before = service.stored_size()
            response = call(service, service.auth(who))
            want = expected_status(endpoint, allowed, who)
            if response.status_code != want:
                failures.append(f"{endpoint} as {who}: {response.status_code}, expected {want}: {response.text[:200]}")
            if response.status_code in (NO_KEY, DENIED):
                assert response.headers["content-type"] == "application/problem+json"
                if service.stored_size() != before:
                    failures.append(f"{endpoint} as {who} was refused but wrote to the ledger")
            if response.status_code == NO_KEY:
                assert response.headers["www-authenticate"].startswith("Bearer")
    assert not failures, "\n".join(failures)
    assert covered - PUBLIC_ENDPOINTS == set(ENDPOINT_ROLES)
    assert not PUBLIC_ENDPOINTS & set(ENDPOINT_ROLES)


def test_no_endpoint_changes_or_deletes(service: Harness) -> None:
    document = service.client.get("/openapi.json", headers=service.auth("admin")).json()
    verbs = {verb for operations in document["paths"].values() for verb in operations}
    assert verbs <= {"get", "post"}
    assert not verbs & {"put", "patch", "delete"}
    routed = {m for route in service.app.routes for m in getattr(route, "methods", set())}
    assert routed <= {"GET", "HEAD", "POST"}
    size = service.stored_size()
    for verb in ("PUT", "PATCH", "DELETE"):
        for path in ("/v1/entries/0", "/v1/keys", "/v1/keys/test-producer-1", "/v1/checkpoints/latest", "/v1/batches"):
            response = service.client.request(verb, path, headers=service.auth("admin"))
            assert response.status_code in (404, 405), (verb, path)  # no such route, or not that verb
            assert response.headers["content-type"] == "application/problem+json"
    assert service.stored_size() == size
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert document["paths"]["/v1/batches"]["post"]["x-roles"] == ["producer"]


def test_openapi_document_lists_every_endpoint(service: Harness) -> None:
    document = service.client.get("/openapi.json").json()
    listed = {f"{verb.upper()} {path}" for path, ops in document["paths"].items() for verb in ops}
    assert listed == set(ENDPOINT_ROLES) | {"GET /healthz", "GET /readyz"}


def test_api_keys_are_stored_only_as_hashes_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db.apikeys.json"
    store = ApiKeyStore.load(path)
    principal, raw = store.create("producer", "svc-a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert raw not in text
    assert raw.split("_", 2)[2] not in text  # the 43-character secret (base64url: it may hold "_" too)
    assert hashlib.sha256(raw.encode()).hexdigest() in text
    assert store.authenticate(raw) == principal
    assert principal.role == "producer"
    assert principal.producer == "svc-a"
    assert store.authenticate(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert store.authenticate("llk_0000000000000000_" + "A" * 43) is None
    assert store.authenticate("not a key") is None

    # another process (the CLI) adds a key: the running store accepts it without a restart
    _, later = ApiKeyStore.load(path).create("auditor")
    assert store.authenticate(later) is not None
    assert store.authenticate(raw) == principal

    with pytest.raises(InputError):
        store.create("producer")
    with pytest.raises(InputError):
        store.create("auditor", "svc-a")
    with pytest.raises(InputError):
        store.create("root")
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        ApiKeyStore.load(path)
    os.chmod(path, 0o600)
    path.write_text(json.dumps({"format": "something else", "keys": []}))
    with pytest.raises(KeyringError, match="malformed"):
        ApiKeyStore.load(path)


def test_cli_creates_api_keys_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "cli.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    capsys.readouterr()
    assert (
        main(["apikey", "create", "--ledger", str(ledger), "--role", "producer", "--producer", "svc-a", "--json"]) == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["role"] == "producer"
    assert created["producer"] == "svc-a"
    path = tmp_path / "cli.db.apikeys.json"
    assert created["api_key"] not in path.read_text()
    assert ApiKeyStore.load(path).authenticate(created["api_key"]) is not None
    assert main(["apikey", "create", "--ledger", str(ledger), "--role", "producer"]) == 2
    assert "producer" in capsys.readouterr().err
    assert main(["apikey", "create", "--ledger", str(ledger), "--role", "admin"]) == 0
    raw = capsys.readouterr().out.strip()
    assert ApiKeyStore.load(path).authenticate(raw).role == "admin"  # type: ignore[union-attr]


def test_token_secret_is_required_to_be_long_enough(service: Harness) -> None:
    from lineage_ledger.service.app import create_app

    with pytest.raises(InputError):
        create_app(service.ledger, api_keys=ApiKeyStore.in_memory(), token_secret=b"short")
    assert len(TOKEN_SECRET) >= 16

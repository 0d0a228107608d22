"""Raw bearer tokens never stay anywhere: not in the store's files, not in the service's logs.

JWT-shaped tokens are sent the ways a client would (RFC 7009 and 7662 form bodies) and the ways a careless
client might (in the URL, in a path, inside an event, as JSON); afterwards every byte of every file the
service and its ledger left behind, and every captured log record, is searched for each token and for each
of its distinctive segments.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from pathlib import Path

import pytest

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.encoding import canonical_bytes
from tests.conftest import token_event
from tests.service.conftest import TOKEN_SECRET, make_harness


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_like(subject: str) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": secrets.token_hex(4)}).encode())
    claims = {"sub": subject, "jti": secrets.token_hex(16), "exp": int(time.time()) + 3600, "scope": "read write"}
    return f"{header}.{b64url(json.dumps(claims).encode())}.{b64url(secrets.token_bytes(64))}"


def needles(token: str) -> list[bytes]:
    """The token and its claims and signature segments (the header alone is not distinctive)."""
    _, claims, signature = token.split(".")
    return [token.encode(), claims.encode(), signature.encode()]


def event_carrying(raw: str) -> bytes:
    """A canonical ISSUED event with the raw token in a payload field (what a careless producer might send)."""
    event = json.loads(token_event("ISSUED", "a" * 64, time.time_ns()))
    event["payload"] = {"user_agent": f"Bearer {raw}"}
    return canonical_bytes(event)


def scan_files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_raw_tokens_are_never_stored_or_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = {name: jwt_like(name) for name in ("issued-1", "issued-2", "unknown", "careless")}
    harness = make_harness(tmp_path / "service")
    service = next(harness)
    try:
        for name in ("issued-1", "issued-2"):
            tid = token_fingerprint(TOKEN_SECRET, tokens[name])
            assert service.post_batch(service.batch([token_event("ISSUED", tid, time.time_ns())])).status_code == 200
        producer, admin = service.auth("producer"), service.auth("admin")
        for token in tokens.values():
            assert service.client.post("/v1/introspect", data={"token": token}, headers=producer).status_code == 200
        assert (
            service.client.post("/v1/revoke", data={"token": tokens["issued-1"]}, headers=producer).status_code == 200
        )
        assert service.client.post("/v1/revoke", data={"token": tokens["issued-2"]}, headers=admin).status_code == 200
        assert service.client.post("/v1/revoke", data={"token": tokens["unknown"]}, headers=admin).status_code == 200
        for name in ("issued-1", "issued-2"):
            answer = service.client.post("/v1/introspect", data={"token": tokens[name]}, headers=producer)
            assert answer.json() == {"active": False}

        careless = tokens["careless"]
        refused = [
            service.client.post("/v1/revoke", params={"token": careless}, data={"token": careless}, headers=producer),
            service.client.post(f"/v1/introspect?token={careless}", headers=producer),
            service.client.post("/v1/revoke", json={"token": careless}, headers=producer),
            service.client.post("/v1/revoke", data={"token": careless, "region": "Not A Region"}, headers=producer),
            service.client.get(f"/v1/tokens/{careless}/timeline", headers=service.auth("auditor")),
            service.client.get(f"/v1/entries/{careless}", headers=service.auth("auditor")),
            service.client.post(
                "/v1/revoke", data={"token": careless}, headers={"Authorization": f"Bearer {careless}"}
            ),
            service.post_batch(service.batch([event_carrying(careless)])),
        ]
        assert all(400 <= r.status_code < 500 for r in refused), [r.status_code for r in refused]
        revoked = service.on_writer(
            lambda: service.ledger.store.revoked(
                ["token:" + token_fingerprint(TOKEN_SECRET, tokens[n]) for n in ("issued-1", "issued-2")]
            )
        )
        assert len(revoked) == 2
    finally:
        for _ in harness:  # stop the app and close the ledger, so every byte is in the files
            pass

    files = scan_files(tmp_path)
    assert any(name.endswith("ledger.db") for name in files)
    stored = b"".join(files.values())
    # the scan can see what is there: the fingerprints (the only form of a token the ledger keeps) are found
    assert token_fingerprint(TOKEN_SECRET, tokens["issued-1"]).encode() in stored
    service_logs = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name == "lineage_ledger.service" and "/v1/revoke" in r.getMessage() for r in service_logs)
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {logging.Formatter().formatException(r.exc_info) if r.exc_info else ''}"
        for r in service_logs
    ).encode()
    for name, token in tokens.items():
        for needle in needles(token):
            for path, data in files.items():
                assert needle not in data, f"{name} found in {path}"
            assert needle not in logged, f"{name} found in the service log"

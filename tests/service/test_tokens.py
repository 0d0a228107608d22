"""RFC 7009 revocation and RFC 7662 introspection: raw tokens in, fingerprints and ledger state out."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.service.app import SERVICE_PRODUCER
from tests.conftest import token_event
from tests.service.conftest import TOKEN_SECRET, Harness
from tests.service.test_ingest import assert_problem

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def form_post(service: Harness, path: str, data: dict[str, str], who: str = "producer") -> httpx.Response:
    response: httpx.Response = service.client.post(path, data=data, headers=service.auth(who))
    return response


def introspect(service: Harness, raw: str, **extra: str) -> dict[str, Any]:
    response = form_post(service, "/v1/introspect", {"token": raw, **extra})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def issue(service: Harness, raw: str, region: str | None = None, **payload: object) -> str:
    """Record ISSUED for the raw token (as a producer would, by fingerprint); return its token id."""
    tid = token_fingerprint(TOKEN_SECRET, raw, region)
    response = service.post_batch(service.batch([token_event("ISSUED", tid, time.time_ns(), **payload)]))
    assert response.status_code == 200, response.text
    return tid


def test_revocation_makes_introspection_inactive_and_fills_the_revocation_set(service: Harness) -> None:
    raw = "opaque-access-token-0001"
    tid = issue(service, raw, user_id="alice")
    active = introspect(service, raw)
    assert active["active"] is True
    assert active["token_id"] == tid
    assert active["lineage_state"] == "ISSUED"

    size = service.stored_size()
    revoked = form_post(service, "/v1/revoke", {"token": raw, "token_type_hint": "access_token"})
    assert revoked.status_code == 200
    assert revoked.content == b""
    assert service.stored_size() == size + 1
    assert introspect(service, raw) == {"active": False}
    revocations = service.on_writer(lambda: service.ledger.store.revoked(["token:" + tid]))
    assert revocations == {"token:" + tid: size}

    entry = service.client.get(f"/v1/entries/{size}", headers=service.auth("auditor")).json()
    assert entry["signed_by"]["producer"] == SERVICE_PRODUCER
    event = json.loads(entry["entry"])["event"]
    assert event["event_type"] == "REVOKED"
    assert event["token_id"] == tid
    assert raw not in entry["entry"]
    timeline = service.client.get(f"/v1/tokens/{tid}/timeline", headers=service.auth("auditor")).json()
    assert [(s["event_type"], s["verdict"]) for s in timeline["timeline"]] == [("ISSUED", "ok"), ("REVOKED", "ok")]


def test_revoking_an_unknown_or_revoked_token_answers_200_and_writes_nothing(service: Harness) -> None:
    raw = "opaque-access-token-0002"
    size = service.stored_size()
    assert form_post(service, "/v1/revoke", {"token": raw}).status_code == 200
    assert service.stored_size() == size
    issue(service, raw)
    assert form_post(service, "/v1/revoke", {"token": raw}, who="admin").status_code == 200
    size = service.stored_size()
    assert form_post(service, "/v1/revoke", {"token": raw}).status_code == 200
    assert service.stored_size() == size


def test_introspection_of_unknown_and_expired_tokens(service: Harness) -> None:
    assert introspect(service, "never-issued-token") == {"active": False}
    past = format_reading(time.time_ns() - 10**9, 0)
    issue(service, "expired-token", expires_at=past)
    assert introspect(service, "expired-token") == {"active": False}
    future_ns = time.time_ns() + 3600 * 10**9
    issue(service, "fresh-token", expires_at=format_reading(future_ns, 0))
    fresh = introspect(service, "fresh-token")
    assert fresh["active"] is True
    assert fresh["exp"] == future_ns // 10**9


def test_region_prefixed_tokens(service: Harness) -> None:
    tid = issue(service, "regional-token", region="eu-west-1")
    assert tid.startswith("eu-west-1:")
    assert introspect(service, "regional-token") == {"active": False}  # another fingerprint without the region
    assert introspect(service, "regional-token", region="eu-west-1")["token_id"] == tid
    form_post(service, "/v1/revoke", {"token": "regional-token", "region": "eu-west-1"})
    assert introspect(service, "regional-token", region="eu-west-1") == {"active": False}


@pytest.mark.parametrize("path", ["/v1/revoke", "/v1/introspect"])
def test_malformed_token_requests_are_4xx_and_write_nothing(service: Harness, path: str) -> None:
    issue(service, "some-token")
    size = service.stored_size()
    auth = service.auth("producer")

    def oauth_400(response: httpx.Response, field: str | None) -> None:
        assert assert_problem(response, 400, "invalid-request", field)["error"] == "invalid_request"

    oauth_400(service.client.post(path, content=b"", headers={**auth, **FORM}), "token")
    oauth_400(service.client.post(path, data={"token": ""}, headers=auth), "token")
    oauth_400(service.client.post(path, data={"token": "x" * 20_000}, headers=auth), "token")
    oauth_400(
        service.client.post(path, params={"token": "some-token"}, data={"token": "some-token"}, headers=auth), None
    )
    oauth_400(service.client.post(path, content=b"token=a&token=b", headers={**auth, **FORM}), "token")
    oauth_400(service.client.post(path, content=b"token=%ff%fe", headers={**auth, **FORM}), "body")
    oauth_400(service.client.post(path, data={"token": "some-token", "region": "EU WEST"}, headers=auth), "region")
    too_many = "&".join(f"p{i}=1" for i in range(20)).encode()
    oauth_400(service.client.post(path, content=too_many, headers={**auth, **FORM}), "body")
    as_json = service.client.post(path, json={"token": "some-token"}, headers=auth)
    assert_problem(as_json, 415, "unsupported-media-type")
    assert service.stored_size() == size
    assert introspect(service, "some-token")["active"] is True


def test_revoking_a_refresh_token_ends_the_tokens_derived_from_it(service: Harness) -> None:
    """RFC 7009 section 2.1: the access and refresh tokens issued from a revoked refresh token stop being
    active at introspection, though the ledger recorded no REVOKED of their own."""
    parent = issue(service, "refresh-token-family-0")
    now = time.time_ns()
    children = [token_fingerprint(TOKEN_SECRET, f"refresh-token-family-{n}") for n in (1, 2)]
    events = [
        token_event("REFRESHED", children[0], now, parent_token_id=parent),
        token_event("ISSUED", children[1], now + 1_000, parent_token_id=children[0]),  # an exchange
    ]
    assert service.post_batch(service.batch(events)).status_code == 200
    assert introspect(service, "refresh-token-family-1")["active"] is True
    assert introspect(service, "refresh-token-family-2")["active"] is True
    assert form_post(service, "/v1/revoke", {"token": "refresh-token-family-0"}).status_code == 200
    assert introspect(service, "refresh-token-family-0") == {"active": False}
    assert introspect(service, "refresh-token-family-1") == {"active": False}
    assert introspect(service, "refresh-token-family-2") == {"active": False}

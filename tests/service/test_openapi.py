"""The OpenAPI document of a real ``lineage serve`` says what the service answers: every error status as an
RFC 9457 problem, RFC 7009's empty 200; and the service keeps to it (Allow, token_type_hint)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.service.auth import load_token_secret
from lineage_ledger.service.problems import PROBLEM_JSON
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_event
from tests.service.serving import Server, api_keys, make_ledger, serving

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("openapi")
    ledger = directory / "openapi.db"
    make_ledger(ledger)
    keys = api_keys(ledger)
    with serving(ledger, directory / "server.log") as server:
        yield server, keys


@pytest.fixture(scope="module")
def document(served: tuple[Server, dict[str, str]]) -> dict[str, Any]:
    server, keys = served
    response = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": keys["auditor"]}, timeout=10)
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def test_every_error_status_is_a_documented_problem(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail"]
    seen = 0
    for method, path, operation in operations(document):
        responses = operation["responses"]
        errors = {int(code) for code in responses if int(code) >= 400}
        expected = {413}
        if "security" in operation:
            expected |= {401, 403, 404, 422, 503}
            if method == "post":
                expected |= {400, 409, 415}
        assert expected <= errors, (method, path, sorted(errors))
        for code in errors:
            assert responses[str(code)]["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}, (method, path, code)
        if 503 in errors:
            assert "Retry-After" in responses["503"]["headers"]
        seen += 1
    assert seen >= 20


def test_revoke_answers_an_empty_200_as_documented(
    served: tuple[Server, dict[str, str]], document: dict[str, Any]
) -> None:
    server, keys = served
    documented = document["paths"]["/v1/revoke"]["post"]["responses"]["200"]
    assert "content" not in documented, documented
    response = httpx.post(f"{server.url}/v1/revoke", data={"token": "t0k3n"}, headers={"Authorization": keys["admin"]})
    assert response.status_code == 200
    assert response.content == b""
    assert "content-type" not in response.headers


@pytest.mark.parametrize(("path", "methods"), [("/v1/keys", "GET, POST"), ("/v1/batches", "POST")])
def test_allow_names_every_method_of_the_path(served: tuple[Server, dict[str, str]], path: str, methods: str) -> None:
    server, keys = served
    response = httpx.options(f"{server.url}{path}", headers={"Authorization": keys["admin"]})
    assert response.status_code == 405
    assert response.headers["allow"] == methods
    assert response.headers["content-type"] == PROBLEM_JSON


# (endpoint, the OAuth error code a hint outside the enum gets)
HINT_ERRORS = [("/v1/revoke", "unsupported_token_type"), ("/v1/introspect", "invalid_request")]


@pytest.mark.parametrize(("path", "error"), HINT_ERRORS)
def test_a_token_type_hint_outside_the_enum_is_refused(
    served: tuple[Server, dict[str, str]], path: str, error: str
) -> None:
    server, keys = served
    headers = {"Authorization": keys["admin" if path == "/v1/revoke" else "auditor"]}
    for hint in ("id_token", "ACCESS_TOKEN", "urn:x"):
        response = httpx.post(f"{server.url}{path}", data={"token": "abc", "token_type_hint": hint}, headers=headers)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["error"] == error
        assert response.json()["field"] == "token_type_hint"
    for hint in ("access_token", "refresh_token", ""):
        response = httpx.post(f"{server.url}{path}", data={"token": "abc", "token_type_hint": hint}, headers=headers)
        assert response.status_code == 200, (hint, response.text)


def test_a_refused_hint_revokes_nothing(served: tuple[Server, dict[str, str]]) -> None:
    server, keys = served
    raw = "raw-token-for-the-hint-test"
    secret = load_token_secret(f"{server.ledger}.secret")
    issued = token_event("ISSUED", token_fingerprint(secret, raw), time.time_ns(), user_id="hint")
    envelope = seal_batch([issued], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    posted = httpx.post(
        f"{server.url}/v1/batches",
        content=envelope,
        headers={"Authorization": keys["producer"], "Content-Type": "application/json"},
    )
    assert posted.status_code == 200, posted.text
    auditor = {"Authorization": keys["auditor"]}
    assert httpx.post(f"{server.url}/v1/introspect", data={"token": raw}, headers=auditor).json()["active"] is True
    refused = httpx.post(
        f"{server.url}/v1/revoke",
        data={"token": raw, "token_type_hint": "id_token"},
        headers={"Authorization": keys["admin"]},
    )
    assert refused.status_code == 400
    assert httpx.post(f"{server.url}/v1/introspect", data={"token": raw}, headers=auditor).json()["active"] is True

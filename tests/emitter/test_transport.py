"""Transports: what each answer of the ledger becomes, on the wire contract of POST /v1/batches."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lineage_ledger.emitter import HttpTransport, LocalTransport
from lineage_ledger.emitter.transport import retry_after_seconds
from lineage_ledger.errors import (
    ConflictError,
    EnvelopeError,
    InputError,
    KeyringError,
    LedgerError,
    PushbackError,
    SignatureError,
    StoreError,
    TransportError,
)
from lineage_ledger.ledger.writer import Ledger, Receipt
from tests.emitter.helpers import create_ledger, open_ledger

ENVELOPE = b'{"payloadType":"x","payload":"","signatures":[],"events":[]}'
RECEIPTS = {
    "receipts": [
        {"event_id": "e1", "index": 7, "verdict": "ok", "duplicate": False, "status": "pending"},
        {"event_id": "e2", "index": 8, "verdict": "use-after-revoke", "duplicate": True, "status": "sealed"},
    ],
    "size": 9,
    "sealed_size": 9,
}


def _problem(status: int, slug: str, detail: str, field: str | None = None) -> dict[str, object]:
    return {
        "type": f"urn:lineage-ledger:problem:{slug}",
        "title": slug,
        "status": status,
        "detail": detail,
        "field": field,
    }


def _transport(handler: Callable[[httpx.Request], httpx.Response], api_key: str | None = "k-1") -> HttpTransport:
    return HttpTransport("https://ledger.example/", api_key, http_transport=httpx.MockTransport(handler))


def test_a_2xx_answer_gives_the_receipts_and_the_request_is_as_specified() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=RECEIPTS)

    receipts = _transport(handler).send(ENVELOPE)
    assert receipts == [Receipt("e1", 7, "ok", False), Receipt("e2", 8, "use-after-revoke", True)]
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", "https://ledger.example/v1/batches")
    assert request.headers["authorization"] == "Bearer k-1"
    assert request.headers["content-type"] == "application/json"
    assert request.content == ENVELOPE


def test_no_api_key_sends_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"receipts": []})

    _transport(handler, api_key=None).send(ENVELOPE)
    assert "authorization" not in seen[0].headers


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "check"),
    [
        (503, _problem(503, "busy", "queue full"), {"Retry-After": "7"}, PushbackError, {"retry_after": 7.0}),
        (503, b"", {}, PushbackError, {"retry_after": 1.0}),
        (429, b"slow down", {"Retry-After": "2"}, PushbackError, {"retry_after": 2.0}),
        (408, b"", {}, PushbackError, {}),
        (500, _problem(500, "internal", "failed"), {}, TransportError, {}),
        (502, b"<html>bad gateway</html>", {}, TransportError, {}),
        (404, b"", {}, TransportError, {}),
        (421, _problem(421, "misdirected", "belongs to shard 1", "events[0]"), {}, TransportError, {}),
        (401, _problem(401, "unauthorized", "bad API key"), {}, KeyringError, {}),
        (403, _problem(403, "key-not-accepted", "unknown key"), {}, KeyringError, {}),
        (403, _problem(403, "bad-signature", "does not verify"), {}, SignatureError, {}),
        (400, _problem(400, "malformed-envelope", "not JSON", "envelope"), {}, EnvelopeError, {"field": "envelope"}),
        (
            422,
            _problem(422, "invalid-input", "too long", "events[3].payload.ip"),
            {},
            InputError,
            {"field": "events[3].payload.ip"},
        ),
        (413, _problem(413, "body-too-large", "too big"), {}, InputError, {}),
        (409, _problem(409, "conflict", "events[1].event_id: other bytes"), {}, ConflictError, {}),
        (200, b"not json", {}, TransportError, {}),
        (200, {"no": "receipts"}, {}, TransportError, {}),
    ],
)
def test_each_answer_maps_to_its_error(
    status: int, body: object, headers: dict[str, str], error: type[LedgerError], check: dict[str, object]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)

    with pytest.raises(error) as caught:
        _transport(handler).send(ENVELOPE)
    assert type(caught.value) is error
    for name, value in check.items():
        assert getattr(caught.value, name) == value
    assert "k-1" not in str(caught.value)


def test_network_failures_are_transport_errors_without_credentials() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        transport = HttpTransport(f"http://user:secret-pw@127.0.0.1:{port}", "k-2", timeout=2.0)
        with pytest.raises(TransportError) as caught:
            transport.send(ENVELOPE)
        transport.close()
    text = str(caught.value)
    assert f"127.0.0.1:{port}/v1/batches" in text
    assert "secret-pw" not in text
    assert "k-2" not in text


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(InputError):
        HttpTransport("ftp://ledger.example")


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds("100000") == 300.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_local_transport_retries_store_failures_but_passes_conflicts(tmp_path: Path) -> None:
    create_ledger(tmp_path / "ledger.db")

    class Failing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def append(self, envelope: bytes) -> None:
            raise self.error

    with pytest.raises(TransportError):
        LocalTransport(Failing(StoreError("disk I/O error"))).send(ENVELOPE)  # type: ignore[arg-type]
    with pytest.raises(ConflictError):
        LocalTransport(Failing(ConflictError("events[0].event_id: other bytes"))).send(ENVELOPE)  # type: ignore[arg-type]
    with open_ledger(tmp_path / "ledger.db") as ledger:
        assert isinstance(ledger, Ledger)
        with pytest.raises(EnvelopeError):
            LocalTransport(ledger).send(b"not an envelope")

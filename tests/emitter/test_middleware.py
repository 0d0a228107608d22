"""The middlewares: the USED event each request with a bearer token produces, and nothing for the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from fastapi import FastAPI, HTTPException
from starlette.testclient import TestClient

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.model import TokenEvent, encode_event
from lineage_ledger.emitter import Emitter, LineageASGIMiddleware, LineageWSGIMiddleware, LocalTransport
from lineage_ledger.emitter.middleware import bearer_token, outcome_of, parse_traceparent
from lineage_ledger.errors import InputError
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.emitter.helpers import SECRET, WAIT_S, RecordingSink, create_ledger, open_ledger, recorded_events

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "tok-abc.def"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
UA = "curl/8.5.0"
CLIENT_IP = "203.0.113.7"


def _fastapi() -> FastAPI:
    app = FastAPI()

    @app.get("/orders/{order}")
    def order(order: str) -> dict[str, str]:
        return {"order": order}

    @app.post("/denied")
    def denied() -> None:
        raise HTTPException(status_code=401)

    @app.get("/forbidden")
    def forbidden() -> None:
        raise HTTPException(status_code=403)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    return app


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


def _asgi(sink: RecordingSink, **options: Any) -> TestClient:
    app = LineageASGIMiddleware(_fastapi(), sink, SECRET, **options)
    return TestClient(app, raise_server_exceptions=False, client=(CLIENT_IP, 50123))


def _auth(token: str = TOKEN, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "User-Agent": UA, **extra}


@pytest.mark.parametrize(
    ("method", "path", "status", "outcome"),
    [
        ("GET", "/orders/42", 200, "ALLOW"),
        ("POST", "/denied", 401, "DENY"),
        ("GET", "/forbidden", 403, "DENY"),
        ("GET", "/nowhere", 404, None),
        ("GET", "/boom", 500, None),
    ],
)
def test_asgi_records_one_used_event_per_request_with_a_token(
    sink: RecordingSink, method: str, path: str, status: int, outcome: str | None
) -> None:
    response = _asgi(sink).request(method, path, headers=_auth(traceparent=TRACEPARENT))
    assert response.status_code == status
    (event,) = sink.events
    assert event.event_type == "USED"
    assert event.token_id == token_fingerprint(SECRET, TOKEN)
    assert event.payload.resource == path
    assert event.payload.outcome == outcome
    assert event.payload.ip == CLIENT_IP
    assert event.payload.user_agent == UA
    assert event.payload.trace_id == TRACE
    assert event.occurred_at == "1763891234000000000.00001"
    encode_event(event)  # a valid event, as the ledger will check it


def test_asgi_records_nothing_without_a_bearer_token(sink: RecordingSink) -> None:
    client = _asgi(sink)
    assert client.get("/orders/1").status_code == 200
    assert client.get("/orders/1", headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 200
    assert client.get("/orders/1", headers={"Authorization": "Bearer "}).status_code == 200
    assert client.get(f"/orders/1?access_token={TOKEN}").status_code == 200  # not accepted by default
    assert sink.events == []


def test_asgi_reads_the_query_token_only_when_asked_and_records_the_path_only(sink: RecordingSink) -> None:
    response = _asgi(sink, accept_query_token=True).get(f"/orders/9?access_token={TOKEN}&x=1")
    assert response.status_code == 200
    (event,) = sink.events
    assert event.token_id == token_fingerprint(SECRET, TOKEN)
    assert event.payload.resource == "/orders/9"


def test_asgi_options_region_resource_and_forwarded_for(sink: RecordingSink) -> None:
    client = _asgi(
        sink, region="eu-west-1", resource=lambda scope: f"{scope['method']} {scope['path']}", forwarded_hops=2
    )
    client.get("/orders/1", headers=_auth(**{"X-Forwarded-For": "198.51.100.1, 192.0.2.10"}))
    client.get("/orders/2", headers=_auth(**{"X-Forwarded-For": "192.0.2.10"}))  # fewer hops than trusted
    client.get("/orders/3", headers=_auth(**{"X-Forwarded-For": "not-an-ip, 192.0.2.10"}))
    first, second, third = sink.events
    assert first.token_id == token_fingerprint(SECRET, TOKEN, "eu-west-1")
    assert first.payload.resource == "GET /orders/1"
    assert first.payload.ip == "198.51.100.1"
    assert second.payload.ip == third.payload.ip == CLIENT_IP


def test_asgi_ignores_forwarded_for_unless_trusted(sink: RecordingSink) -> None:
    _asgi(sink).get("/orders/1", headers=_auth(**{"X-Forwarded-For": "198.51.100.1"}))
    assert sink.events[0].payload.ip == CLIENT_IP


def test_asgi_passes_other_scopes_through_and_handles_a_minimal_app() -> None:
    sink = RecordingSink()
    seen: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    middleware = LineageASGIMiddleware(app, sink, SECRET)
    long_ua = "x" * 5000
    scope = {
        "type": "http",
        "path": "/minimal",
        "headers": [(b"authorization", b"bearer " + TOKEN.encode()), (b"user-agent", long_ua.encode())],
        "client": None,
    }
    asyncio.run(middleware({"type": "lifespan"}, receive, send))
    asyncio.run(middleware(scope, receive, send))
    assert seen == ["lifespan", "http"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (event,) = sink.events
    assert event.payload.outcome == "ALLOW"
    assert event.payload.ip is None
    assert event.payload.user_agent == long_ua[:4096]
    encode_event(event)


def test_a_failing_sink_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(RecordingSink):
        def emit(self, event: TokenEvent) -> None:
            raise InputError("emitter", "is closed")

    response = _asgi(Broken()).get("/orders/1", headers=_auth())
    assert response.status_code == 200
    assert "could not record" in caplog.text


def test_a_short_secret_is_refused_when_the_middleware_is_built() -> None:
    with pytest.raises(InputError, match="secret"):
        LineageASGIMiddleware(_fastapi(), RecordingSink(), b"short")
    with pytest.raises(InputError, match="region"):
        LineageWSGIMiddleware(flask.Flask("x").wsgi_app, RecordingSink(), SECRET, region="EU West")


def _flask(sink: RecordingSink, **options: Any) -> flask.testing.FlaskClient:
    app = flask.Flask("wsgi-tests")

    @app.get("/orders/<order>")
    def order(order: str) -> dict[str, str]:
        return {"order": order}

    @app.post("/denied")
    def denied() -> tuple[str, int]:
        return "no", 401

    @app.get("/forbidden")
    def forbidden() -> tuple[str, int]:
        return "no", 403

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.get("/stream")
    def stream() -> flask.Response:
        return flask.Response(iter([b"a", b"b"]))

    app.wsgi_app = LineageWSGIMiddleware(app.wsgi_app, sink, SECRET, **options)  # type: ignore[method-assign]
    return app.test_client()


def _wsgi_get(client: flask.testing.FlaskClient, method: str, path: str, headers: dict[str, str]) -> int:
    with client.open(path, method=method, headers=headers, environ_base={"REMOTE_ADDR": CLIENT_IP}) as response:
        response.get_data()
        return response.status_code


@pytest.mark.parametrize(
    ("method", "path", "status", "outcome"),
    [
        ("GET", "/orders/42", 200, "ALLOW"),
        ("POST", "/denied", 401, "DENY"),
        ("GET", "/forbidden", 403, "DENY"),
        ("GET", "/nowhere", 404, None),
        ("GET", "/boom", 500, None),
        ("GET", "/stream", 200, "ALLOW"),
    ],
)
def test_wsgi_records_one_used_event_per_request_with_a_token(
    sink: RecordingSink, method: str, path: str, status: int, outcome: str | None
) -> None:
    assert _wsgi_get(_flask(sink), method, path, _auth(traceparent=TRACEPARENT)) == status
    (event,) = sink.events
    assert event.token_id == token_fingerprint(SECRET, TOKEN)
    assert (event.payload.resource, event.payload.outcome) == (path, outcome)
    assert (event.payload.ip, event.payload.user_agent, event.payload.trace_id) == (CLIENT_IP, UA, TRACE)
    encode_event(event)


def test_wsgi_records_nothing_without_a_bearer_token(sink: RecordingSink) -> None:
    client = _flask(sink)
    assert _wsgi_get(client, "GET", "/orders/1", {}) == 200
    assert _wsgi_get(client, "GET", "/orders/1", {"Authorization": "Token abc"}) == 200
    assert _wsgi_get(client, "GET", f"/orders/1?access_token={TOKEN}", {}) == 200
    assert sink.events == []


def test_wsgi_query_token_and_forwarded_for(sink: RecordingSink) -> None:
    client = _flask(sink, accept_query_token=True, forwarded_hops=1)
    assert _wsgi_get(client, "GET", f"/orders/1?access_token={TOKEN}", {"X-Forwarded-For": "192.0.2.99"}) == 200
    (event,) = sink.events
    assert event.token_id == token_fingerprint(SECRET, TOKEN)
    assert event.payload.ip == "192.0.2.99"


def test_wsgi_records_when_the_server_closes_an_unread_body(sink: RecordingSink) -> None:
    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("201 Created", [])
        yield b"never read"

    middleware = LineageWSGIMiddleware(app, sink, SECRET)
    environ = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}", "PATH_INFO": "/caf\xc3\xa9", "SCRIPT_NAME": "/api"}
    body = middleware(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert sink.events == []
    next(iter(body))  # starts the generator, which calls start_response
    body.close()  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]  # a second close records nothing more
    (event,) = sink.events
    assert event.payload.outcome == "ALLOW"
    assert event.payload.resource == "/api/café"
    assert event.payload.ip is None


@pytest.mark.parametrize(
    ("header", "trace_id"),
    [
        (TRACEPARENT, TRACE),
        (f" {TRACEPARENT}\t", TRACE),
        (TRACEPARENT.encode(), TRACE),
        (f"01-{TRACE}-00f067aa0ba902b7-01-future-field", TRACE),
        (f"01-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"01-{TRACE}-00f067aa0ba902b7-01x", None),
        (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE}-00f067aa0ba902b7-01", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE[:-1]}-00f067aa0ba902b7-01", None),
        (f"00_{TRACE}_00f067aa0ba902b7_01", None),
        ("", None),
        (None, None),
        (b"\xff\xfe", None),
    ],
)
def test_traceparent(header: str | bytes | None, trace_id: str | None) -> None:
    assert parse_traceparent(header) == trace_id


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "ALLOW"), (204, "ALLOW"), (302, "ALLOW"), (400, None), (401, "DENY"), (403, "DENY"), (404, None),
     (429, None), (500, None), (0, None)],
)  # fmt: skip
def test_outcome_of_status(status: int, outcome: str | None) -> None:
    assert outcome_of(status) == outcome


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == b"abc"
    assert bearer_token(b"BEARER   abc ") == b"abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None


def test_asgi_events_reach_the_ledger_through_a_real_emitter(tmp_path: Path) -> None:
    create_ledger(tmp_path / "ledger.db")
    with open_ledger(tmp_path / "ledger.db") as ledger:
        emitter = Emitter(PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), LocalTransport(ledger))
        client = TestClient(LineageASGIMiddleware(_fastapi(), emitter, SECRET), client=(CLIENT_IP, 1))
        for n in range(5):
            client.get(f"/orders/{n}", headers=_auth(traceparent=TRACEPARENT))
        assert emitter.flush(WAIT_S)
        emitter.close()
        events = recorded_events(ledger)
    assert [e.payload.resource for e in events] == [f"/orders/{n}" for n in range(5)]
    assert {e.token_id for e in events} == {token_fingerprint(SECRET, TOKEN)}
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)


def test_wsgi_logs_nothing_for_requests_it_records(sink: RecordingSink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lineage_ledger")
    _wsgi_get(_flask(sink), "GET", "/orders/1", _auth())
    assert sink.events
    assert not [r for r in caplog.records if r.name.startswith("lineage_ledger")]

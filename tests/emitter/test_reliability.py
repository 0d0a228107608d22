"""Reliability with real processes: SIGKILL, a ledger that goes away and comes back, and raw-token hygiene.

* An emitting process is SIGKILLed at seeded-random moments, several times, with the same spool: first
  while the ledger is unreachable (everything spools), once while delivering to a ledger (the kill can fall
  between the ledger's commit and the spool's), and again while unreachable. A last start replays the spool:
  every event any process reported as spooled is in the ledger, once, and each run's events are there in
  emit order without gaps.
* A ledger server process that is not running yet, then starts: an emitting process's events all arrive,
  exactly once, in order.
* Raw bearer tokens sent through both middlewares (header, query, cookie, another header), inside refused
  events, and an API key, appear in no byte of the spool, the dead letters, the ledger or the logs.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import flask
import msgspec
import pytest
from fastapi import FastAPI, HTTPException
from starlette.testclient import TestClient

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.emitter import (
    Backoff,
    Emitter,
    HttpTransport,
    LineageASGIMiddleware,
    LineageWSGIMiddleware,
    LocalTransport,
)
from lineage_ledger.ledger.verify import verify_ledger
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.emitter.helpers import (
    SECRET,
    WAIT_S,
    GatedTransport,
    LineReader,
    create_ledger,
    open_ledger,
    recorded_events,
    sequence,
    sequenced_event,
    wait_for,
)

pytestmark = pytest.mark.crash

ROOT = Path(__file__).resolve().parents[2]
FAST = Backoff(initial=0.005, maximum=0.05)


@pytest.fixture
def reserved() -> Iterator[socket.socket]:
    """A loopback socket bound without listen(): connecting to its port is refused until it is closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def dead_port(reserved: socket.socket) -> int:
    """A loopback port where nothing listens."""
    return int(reserved.getsockname()[1])


def _start(module: str, *args: str, stderr: Path) -> subprocess.Popen[str]:
    with stderr.open("w") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", f"tests.emitter.{module}", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )


def _spooled(line: str | None) -> int:
    """The count a complete acknowledgement line reports; -1 for a line the kill cut short."""
    if line is None or not line.endswith("\n"):
        return -1
    return int(json.loads(line)["spooled"])


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.kill()
    child.wait(timeout=WAIT_S)
    if child.stdout is not None:
        child.stdout.close()


def test_sigkilled_emitter_loses_nothing_it_spooled_and_doubles_nothing(tmp_path: Path, dead_port: int) -> None:
    db, spool = tmp_path / "ledger.db", tmp_path / "spool"
    create_ledger(db)
    unreachable = f"http://127.0.0.1:{dead_port}"
    runs = [("r0", unreachable), ("r1", f"ledger:{db}"), ("r2", unreachable), ("r3", unreachable)]
    rng = random.Random(20261124)
    spooled: dict[str, int] = {}
    for label, target in runs:
        err = tmp_path / f"{label}.err"
        child = _start("emitter_child", str(spool), label, target, "5", stderr=err)
        try:
            assert child.stdout is not None
            acks = LineReader(child.stdout)
            wanted, delivering = rng.randint(3, 12), target.startswith("ledger:")
            while wanted > 0 or delivering:  # with a ledger, wait until the child has delivered something
                line = acks.next()
                assert line is not None, err.read_text()
                spooled[label] = max(spooled.get(label, 0), _spooled(line))
                wanted -= 1
                delivering = delivering and json.loads(line)["sent"] == 0
            with pytest.raises(subprocess.TimeoutExpired):  # still emitting when the kill lands
                child.wait(timeout=rng.uniform(0.0, 0.03))
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=WAIT_S) == -signal.SIGKILL
            for line in acks.rest():
                spooled[label] = max(spooled[label], _spooled(line))
        finally:
            _stop(child)
    with open_ledger(db) as ledger:
        before = len(recorded_events(ledger))
        emitter = Emitter(PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), LocalTransport(ledger), spool_dir=spool)
        assert emitter.flush(WAIT_S)
        metrics = emitter.metrics()
        assert emitter.close()
        events = recorded_events(ledger)
        verifier = ledger.log_verifier()
    assert before > 0  # run r1 delivered some events itself
    assert metrics["dead_lettered"] == metrics["dropped"] == 0
    got = sequence(events)
    assert len({e.event_id for e in events}) == len(events)
    expected: list[tuple[str, int]] = []
    for label, _ in runs:
        count = sum(1 for lab, _ in got if lab == label)
        assert count >= spooled[label], f"{label}: {spooled[label]} reported spooled, {count} in the ledger"
        expected += [(label, n) for n in range(count)]
    assert got == expected  # in emit order, no gaps, no doubles, runs one after another
    report = verify_ledger(str(db), verifier=verifier, workers=1)
    assert report.ok, report.problems
    again = Emitter(PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), LocalTransport(open_ledger(db)), spool_dir=spool)
    assert again.metrics()["pending"] == 0
    again.close()


def test_unreachable_ledger_that_comes_back_gets_everything_once_in_order(
    tmp_path: Path, reserved: socket.socket, dead_port: int
) -> None:
    db, spool = tmp_path / "ledger.db", tmp_path / "spool"
    create_ledger(db)
    total = 400
    err = tmp_path / "child.err"
    child = _start("emitter_child", str(spool), "b", f"http://127.0.0.1:{dead_port}", "5", str(total), stderr=err)
    server: subprocess.Popen[str] | None = None
    try:
        assert child.stdout is not None
        acks = LineReader(child.stdout)
        retried = 0
        while retried == 0:  # the child has seen the ledger fail at least once
            line = acks.next()
            assert line is not None, err.read_text()
            retried = json.loads(line).get("retried", 0)
        reserved.close()  # the ledger comes back on the very port the child has been failing to reach
        server = _start("ledger_server", str(db), str(dead_port), stderr=tmp_path / "server.err")
        assert server.stdout is not None
        assert server.stdout.readline() == "ready\n", (tmp_path / "server.err").read_text()
        final: dict[str, object] = {}
        while (line := acks.next()) is not None:
            final = json.loads(line)
        assert child.wait(timeout=WAIT_S) == 0, err.read_text()
    finally:
        _stop(child)
        if server is not None:
            server.terminate()
            server.wait(timeout=WAIT_S)
            assert server.stdout is not None
            server.stdout.close()
    assert final["flushed"] is True
    metrics = final["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["sent"] == metrics["emitted"] == total
    assert metrics["retried"] >= 1
    with open_ledger(db) as ledger:
        events = recorded_events(ledger)
    assert sequence(events) == [("b", n) for n in range(total)]


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEiLCJleHAiOjE3NjM4OTEyMzR9.c2lnbmF0dXJlLW9mLXRoZS1qd3Q"
OPAQUE = "opaque-6cTq0qYf1H9vJkQ2tXw8bN4mZ"
API_KEY = "llk_test_9Xv2Qm4Lr7Tn1Wz5"


def _apps(emitter: Emitter) -> tuple[TestClient, flask.testing.FlaskClient]:
    api = FastAPI()

    @api.get("/orders/{order}")
    def order(order: str) -> dict[str, str]:
        return {"order": order}

    @api.get("/denied")
    def denied() -> None:
        raise HTTPException(status_code=401, detail="no")

    @api.get("/fail")
    def fail() -> None:
        raise RuntimeError("boom")

    asgi = TestClient(
        LineageASGIMiddleware(api, emitter, SECRET, accept_query_token=True),
        raise_server_exceptions=False,
    )
    web = flask.Flask("tokens")

    @web.get("/orders/<order>")
    def flask_order(order: str) -> dict[str, str]:
        return {"order": order}

    @web.get("/denied")
    def flask_denied() -> tuple[str, int]:
        return "no", 403

    web.wsgi_app = LineageWSGIMiddleware(web.wsgi_app, emitter, SECRET)  # type: ignore[method-assign]
    return asgi, web.test_client()


def _wsgi_status(client: flask.testing.FlaskClient, url: str, headers: dict[str, str]) -> int:
    """Request, read and close the response, as a WSGI server does (the middleware records on close)."""
    with client.get(url, headers=headers) as response:
        response.get_data()
        return response.status_code


def _everything_written(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def _assert_no_raw_token(blob: bytes, where: str) -> None:
    for raw in (JWT, OPAQUE, API_KEY):
        for piece in (raw, raw[:20], raw[-20:]):
            assert piece.encode() not in blob, f"{piece[:8]}... found in {where}"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_no_raw_token_reaches_the_spool_the_ledger_or_the_logs(
    tmp_path: Path, dead_port: int, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    # The test clients play the user agent, and httpx logs the URLs it requests (access_token and all):
    # that is the client's log, not the service's, so it stays out of the capture while they run.
    caplog.set_level(logging.WARNING, logger="httpx")
    create_ledger(tmp_path / "ledger.db")
    ledger = open_ledger(tmp_path / "ledger.db")
    transport = GatedTransport(LocalTransport(ledger), down=True)
    emitter = Emitter(
        PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), transport, spool_dir=tmp_path / "spool", backoff=FAST
    )
    asgi, wsgi = _apps(emitter)
    for token in (JWT, OPAQUE):
        planted = {"Authorization": f"Bearer {token}", "Cookie": f"session={token}", "X-Api-Key": token}
        assert asgi.get("/orders/1", headers=planted).status_code == 200
        assert asgi.get(f"/orders/2?access_token={token}").status_code == 200
        assert asgi.get("/denied", headers=planted).status_code == 401
        assert asgi.get("/fail", headers=planted).status_code == 500
        assert _wsgi_status(wsgi, "/orders/3", planted) == 200
        assert _wsgi_status(wsgi, f"/orders/4?access_token={token}", {}) == 200  # not accepted here: no event
        assert _wsgi_status(wsgi, "/denied", planted) == 403
    # Refused before spooling: a raw JWT in a field, a raw token as the token id. Neither may be kept.
    emitter.emit({**_plain_event(), "payload": {"reason": JWT}})
    emitter.emit({**_plain_event(), "token_id": OPAQUE})
    # Refused by the ledger after spooling: an event id reused with other bytes (kept, it is fingerprinted).
    first = sequenced_event("dup", 0)
    emitter.emit(first)
    emitter.emit(msgspec.structs.replace(sequenced_event("dup", 1), event_id=first.event_id))
    assert emitter.sync(WAIT_S)
    wait_for(lambda: emitter.metrics()["retried"] >= 2, "retries while the ledger is down")
    spool_while_down = _everything_written(tmp_path / "spool")
    assert token_fingerprint(SECRET, JWT).encode() in spool_while_down  # the scan looks at real events
    _assert_no_raw_token(spool_while_down, "the spool")

    transport.down = False
    assert emitter.flush(WAIT_S)
    metrics = emitter.metrics()
    assert emitter.close()
    caplog.set_level(logging.DEBUG, logger="httpx")  # from here on httpx works for the emitter
    stray = Emitter(
        PRODUCER,
        PRODUCER_KEY_ID,
        make_producer_signer(),
        HttpTransport(f"http://127.0.0.1:{dead_port}", api_key=API_KEY, timeout=1.0),
        spool_dir=tmp_path / "stray-spool",
        backoff=FAST,
    )
    stray.emit(sequenced_event("stray", 0))
    wait_for(lambda: stray.metrics()["retried"] >= 1, "a failed HTTP delivery")
    assert not stray.close(timeout=0.1)
    ledger.close()

    assert metrics["dead_lettered"] == 3
    assert metrics["sent"] == 2 * 6 + 1  # six requests with a token per token value, and the first "dup"
    dead = (tmp_path / "spool" / "dead-letters.jsonl").read_text().splitlines()
    assert len(dead) == 3
    assert json.loads(dead[2])["event"]["event_id"] == first.event_id
    assert "cannot deliver" in caplog.text
    logs = "\n".join(
        [caplog.text]
        + [r.getMessage() + str(r.args) + (r.exc_text or "") for r in caplog.records]
        + list(capfd.readouterr())
    )
    _assert_no_raw_token(logs.encode(), "the logs")
    _assert_no_raw_token(_everything_written(tmp_path), "the files (spools, dead letters, ledger)")
    _assert_no_raw_token(repr(metrics).encode(), "the metrics")


def _plain_event() -> dict[str, object]:
    event = sequenced_event("refused", 0)
    return {
        "event_id": event.event_id,
        "event_type": "USED",
        "kind": "token",
        "occurred_at": event.occurred_at,
        "schema_version": 1,
        "token_id": event.token_id,
    }

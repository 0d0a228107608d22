"""A stand-in for ``lineage serve``'s POST /v1/batches, run as a real process by the reliability tests.

Same contract as the service: 200 with ``{"receipts": [{event_id, index, verdict, duplicate, status}]}``,
problem+json with the service's status codes for refusals. It checks ``Authorization: Bearer <key>`` when
started with one. Prints ``ready`` once it listens. Usage:
python -m tests.emitter.ledger_server DB PORT [KEY [FAULT:COUNT]]

With ``FAULT:COUNT`` the first COUNT batches are answered, without touching the ledger, exactly as
``lineage serve`` answers that fault (its own problem table, service/problems.py): ``index-conflict`` (409
for an index already taken, as a second writer or a stale server causes), ``store-failure`` (500),
``not-ready`` (503 with Retry-After), ``misdirected`` (421).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from lineage_ledger.errors import (
    ConflictError,
    EnvelopeError,
    InputError,
    KeyringError,
    LedgerError,
    PushbackError,
    RoutingError,
    SignatureError,
    StoreError,
)
from lineage_ledger.service.problems import problem_for
from tests.emitter.helpers import open_ledger

FAULTS: dict[str, LedgerError] = {
    "index-conflict": ConflictError("write refused, nothing was written: UNIQUE constraint failed: entries.idx"),
    "store-failure": StoreError("write failed, nothing was written: disk I/O error"),
    "not-ready": PushbackError("the ledger is not ready", retry_after=0.0),
    "misdirected": RoutingError("events[0].token_id: belongs to shard 1 of 2, this is shard 0"),
}


def main() -> None:
    from pathlib import Path

    path, port = Path(sys.argv[1]), int(sys.argv[2])
    api_key = sys.argv[3] if len(sys.argv) > 3 else None
    fault, count = sys.argv[4].split(":") if len(sys.argv) > 4 else ("", "0")
    faults = {"left": int(count)}
    ledger = open_ledger(path)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: object, media: str = "application/json") -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if self.path != "/v1/batches":
                self._answer(404, {"title": "Not found", "status": 404, "detail": "no route"})
                return
            if api_key is not None and self.headers.get("Authorization") != f"Bearer {api_key}":
                self._answer(401, {"title": "Unauthorized", "status": 401, "detail": "bad API key"})
                return
            envelope = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            problem = "application/problem+json"
            if faults["left"] > 0:
                faults["left"] -= 1
                answer = problem_for(FAULTS[fault])
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                return
            try:
                result = ledger.append(envelope)
            except EnvelopeError as e:
                self._answer(400, {"status": 400, "detail": e.reason, "field": e.field}, problem)
            except InputError as e:
                self._answer(422, {"status": 422, "detail": e.reason, "field": e.field}, problem)
            except (KeyringError, SignatureError) as e:
                self._answer(403, {"status": 403, "detail": str(e), "field": None}, problem)
            except ConflictError as e:
                self._answer(409, {"status": 409, "detail": str(e), "field": None}, problem)
            else:
                receipts = [
                    {
                        "event_id": r.event_id,
                        "index": r.index,
                        "verdict": r.verdict,
                        "duplicate": r.duplicate,
                        "status": "sealed" if result.sealed(r.index) else "pending",
                    }
                    for r in result.receipts
                ]
                self._answer(200, {"receipts": receipts, "size": ledger.size, "sealed_size": ledger.sealed_size})

    server = HTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        ledger.close()


if __name__ == "__main__":
    main()

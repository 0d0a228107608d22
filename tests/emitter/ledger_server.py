"""A stand-in for ``lineage serve``'s POST /v1/batches, run as a real process by the reliability tests.

Same contract as the service: 200 with ``{"receipts": [{event_id, index, verdict, duplicate, status}]}``,
problem+json with the service's status codes for refusals. It checks ``Authorization: Bearer <key>`` when
started with one. Prints ``ready`` once it listens. Usage: python -m tests.emitter.ledger_server DB PORT [KEY]
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from lineage_ledger.errors import ConflictError, EnvelopeError, InputError, KeyringError, SignatureError
from tests.emitter.helpers import open_ledger


def main() -> None:
    from pathlib import Path

    path, port = Path(sys.argv[1]), int(sys.argv[2])
    api_key = sys.argv[3] if len(sys.argv) > 3 else None
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

"""An emitter whose spool is on a full volume, run as a real process by test_spool_full.py.

Usage: python -m tests.emitter.spool_full_child SPOOL URL API_KEY COUNT [FILE_SIZE_LIMIT]

With FILE_SIZE_LIMIT the process may not grow any file past that many bytes (RLIMIT_FSIZE: writes fail with
EFBIG), which stands in for a full volume where a small filesystem cannot be mounted.

Phase 1, the ledger down: emits COUNT events under the ``raise`` policy, counting the SpoolFullErrors, then
asks sync() under ``raise`` and under ``block``; prints one JSON line (with the Prometheus scrape). Then it
waits for a line on stdin (the test starts the ledger meanwhile). Phase 2: emits again, under ``block``,
every event emit() refused, then sync() and flush(); prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys

from prometheus_client import CollectorRegistry, generate_latest

from lineage_ledger.emitter import Backoff, Emitter, EmitterCollector, HttpTransport
from lineage_ledger.errors import SpoolFullError
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.emitter.helpers import WAIT_S, sequenced_event


def main() -> None:
    spool, url, api_key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if len(sys.argv) > 5:
        limit = int(sys.argv[5])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    emitter = Emitter(
        PRODUCER,
        PRODUCER_KEY_ID,
        make_producer_signer(),
        HttpTransport(url, api_key, timeout=2.0),
        spool_dir=spool,
        max_queue=100,
        batch_size=200,
        spool_full="raise",
        spool_full_timeout=WAIT_S,
        backoff=Backoff(0.01, 0.1),
    )
    registry = CollectorRegistry()
    EmitterCollector(emitter).register(registry)
    events = [sequenced_event("full", n) for n in range(count)]
    refused: list[int] = []
    for n, event in enumerate(events):
        try:
            emitter.emit(event)
        except SpoolFullError:
            refused.append(n)
    try:
        synced: object = emitter.sync(timeout=WAIT_S)
    except SpoolFullError:
        synced = "SpoolFullError"
    emitter.spool_full = "block"
    synced_block = emitter.sync(timeout=0.5)
    scraped = [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]
    phase_1 = {"refused": len(refused), "sync": synced, "sync_block": synced_block, "scraped": scraped}
    print(json.dumps({**phase_1, **emitter.metrics()}))
    sys.stdout.flush()
    sys.stdin.readline()
    for n in refused:
        emitter.emit(events[n])
    synced = emitter.sync(timeout=WAIT_S)
    flushed = emitter.flush(timeout=WAIT_S)
    metrics = emitter.metrics()
    closed = emitter.close(timeout=WAIT_S)
    print(json.dumps({"sync": synced, "flush": flushed, "close": closed, **metrics}))


if __name__ == "__main__":
    main()

"""An emitting process for the SIGKILL tests: emits numbered events and reports which are safely spooled.

Usage: python -m tests.emitter.emitter_child SPOOL_DIR LABEL TARGET [SYNC_EVERY [TOTAL]]

TARGET is ``http://127.0.0.1:<port>`` (an HttpTransport; the tests point it at a port where nothing
listens, so everything stays in the spool) or ``ledger:<path>`` (a LocalTransport on a ledger file, so
the kill may land between the ledger's commit and the spool's). After every SYNC_EVERY events it waits
for ``sync()`` and prints ``{"spooled": n, "retried": r, "sent": s}``: events 0..n-1 of LABEL are on disk. Without
TOTAL it never stops by itself; with it, it stops after TOTAL events, flushes, prints
``{"flushed": ok, "metrics": {...}}`` and exits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lineage_ledger.emitter import Backoff, Emitter, HttpTransport, LocalTransport, Transport
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.emitter.helpers import WAIT_S, open_ledger, sequenced_event


def main() -> None:
    spool, label, target = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    every = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    total = int(sys.argv[5]) if len(sys.argv) > 5 else None
    transport: Transport
    if target.startswith("ledger:"):
        transport = LocalTransport(open_ledger(Path(target.removeprefix("ledger:"))))
    else:
        transport = HttpTransport(target, timeout=2.0)
    emitter = Emitter(
        PRODUCER,
        PRODUCER_KEY_ID,
        make_producer_signer(),
        transport,
        spool_dir=spool,
        batch_size=16,
        linger_ms=1.0,
        backoff=Backoff(initial=0.01, maximum=0.05),
    )
    n = 0
    while total is None or n < total:
        emitter.emit(sequenced_event(label, n))
        n += 1
        if n % every == 0:
            if not emitter.sync(WAIT_S):
                raise SystemExit("sync timed out")
            metrics = emitter.metrics()
            print(json.dumps({"spooled": n, "retried": metrics["retried"], "sent": metrics["sent"]}), flush=True)
    flushed = emitter.flush(WAIT_S)
    print(json.dumps({"flushed": flushed, "metrics": emitter.metrics()}), flush=True)
    emitter.close()


if __name__ == "__main__":
    main()

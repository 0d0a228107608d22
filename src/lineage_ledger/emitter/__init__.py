"""The emitter SDK: send token and data events to a lineage ledger from a producer service.

    emitter = Emitter("svc-a", "svc-a-2026", load_signer("svc-a.key"),
                      HttpTransport("https://ledger.example", api_key=os.environ["LINEAGE_API_KEY"]),
                      spool_dir="/var/spool/lineage")
    app.add_middleware(LineageASGIMiddleware, emitter=emitter, token_secret=secret)   # FastAPI / Starlette
    emitter.emit(event)          # anywhere else: never waits for the ledger
    emitter.close()              # at shutdown: spool what is queued, deliver what it can in time

Guarantees (details on :class:`Emitter`): ``emit`` returns at once; events arrive in ``emit`` order,
exactly once in effect (to a sharded ledger, through :class:`ShardedHttpTransport` or Kafka: in order per
shard, so per token); what reached the spool survives SIGKILL and is replayed by the next start, and
``sync()`` returns True only once everything emitted before it is durable; a full spool disk is
back-pressure (``emit`` blocks or raises SpoolFullError), never a silent drop; only events the ledger judged
invalid go to a dead-letter file with the reason; raw bearer tokens are never stored, spooled or logged.
Nothing here imports httpx, Starlette or Flask until it is used.
"""

from __future__ import annotations

from lineage_ledger.emitter.metrics import EmitterCollector
from lineage_ledger.emitter.middleware import (
    EventSink,
    LineageASGIMiddleware,
    LineageWSGIMiddleware,
    parse_traceparent,
)
from lineage_ledger.emitter.sender import Backoff, Emitter, Overflow, SpoolFull
from lineage_ledger.emitter.transport import HttpTransport, LocalTransport, ShardedHttpTransport, Transport

__all__ = [
    "Backoff",
    "Emitter",
    "EmitterCollector",
    "EventSink",
    "HttpTransport",
    "LineageASGIMiddleware",
    "LineageWSGIMiddleware",
    "LocalTransport",
    "Overflow",
    "ShardedHttpTransport",
    "SpoolFull",
    "Transport",
    "parse_traceparent",
]

"""Prometheus metrics follow the ledger's commits, are served on their own port, and never carry a token."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.metrics import LedgerMetrics
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_log_signer, make_producer_signer, token_event, token_id

S = 1_000_000_000
T0 = 1_763_000_000_000_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_metrics_follow_commits_and_leak_no_token(tmp_path: Path) -> None:
    ledger = Ledger.create(str(tmp_path / "l.db"), make_log_signer(), settings=LedgerSettings(block_size=4))
    metrics = LedgerMetrics(ledger.origin)
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    metrics.attach(ledger)
    tok = token_id("metrics")
    events = [
        token_event("ISSUED", tok, T0),
        token_event("REVOKED", tok, T0 + S),
        token_event("USED", tok, T0 + 2 * S, resource="/v1/secret", outcome="ALLOW"),  # after revoke
    ]
    ledger.append(seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer()))
    value = metrics.registry.get_sample_value
    labels = {"log": ledger.origin}
    assert value("lineage_entries_total", {**labels, "kind": "event"}) == 3
    assert value("lineage_entries_total", {**labels, "kind": "seal"}) == 1  # 1 key entry + 3 events: sealed
    assert value("lineage_violations_total", {**labels, "rule": "token.use_after_revoke"}) == 1
    assert value("lineage_log_size", labels) == ledger.size == 5
    assert value("lineage_sealed_size", labels) == ledger.sealed_size == 5
    wal = value("lineage_wal_bytes", labels)
    assert wal is not None
    assert wal > 0
    assert wal == (tmp_path / "l.db-wal").stat().st_size

    port = _free_port()
    server = metrics.serve(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
    assert 'lineage_log_size{log="test.lineage-ledger.local/log"} 5.0' in text
    assert tok not in text
    assert "/v1/secret" not in text
    ledger.close()

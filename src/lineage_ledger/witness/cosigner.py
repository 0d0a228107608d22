"""The ledger's side of C2SP tlog-witness: ask each configured witness to cosign the latest checkpoint.

For each witness the cosigner sends ``add-checkpoint`` with ``old <size>`` set to the size it believes the
witness last cosigned (what it learnt last time, else the largest size that witness's stored cosignatures
cover, else 0) and the RFC 9162 consistency proof from that size, built from the store's tree nodes. A 409
tells it the witness's real size (``text/x.tlog.size``); it then retries once with the proof from there. A
returned cosignature is verified under the witness's key before it is stored with the checkpoint.

It runs off the write path: from ``lineage witness cosign`` (once), or on a thread of its own beside
``lineage serve`` (:meth:`Cosigner.run_forever`). A witness that is down or refuses is retried later, with
a backoff of its own; ingest never waits for it. The lag (entries sealed but not yet cosigned, per witness)
is kept for the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from lineage_ledger.core.cosignature import (
    MAX_PROOF_LINES,
    AddCheckpoint,
    CosignerVerifier,
    format_add_checkpoint,
    parse_cosigner_key,
    verify_cosignatures,
)
from lineage_ledger.core.merkle import TiledNodeReader, consistency_proof
from lineage_ledger.core.note import note_signatures
from lineage_ledger.errors import InputError, LedgerError, TransportError

if TYPE_CHECKING:
    import httpx

    from lineage_ledger.store.base import CheckpointRow, Store

__all__ = ["CosignOutcome", "Cosigner", "WitnessEndpoint", "cosign_metrics", "parse_witness"]

log = logging.getLogger("lineage_ledger.witness")

_MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class WitnessEndpoint:
    """A witness the ledger asks for cosignatures: its submission prefix URL and its cosigner key."""

    url: str
    verifier: CosignerVerifier

    @property
    def add_checkpoint_url(self) -> str:
        """``<submission prefix>/add-checkpoint``."""
        return self.url.rstrip("/") + "/add-checkpoint"


def parse_witness(text: str) -> WitnessEndpoint:
    """A witness given as ``"<URL> <vkey>"`` (either order): its submission prefix and cosigner key."""
    parts = text.split()
    if len(parts) != 2:
        raise InputError("witness", "give a witness as '<URL> <witness verifier key>'")
    url, key = parts if parts[0].startswith(("http://", "https://")) else parts[::-1]
    if not url.startswith(("http://", "https://")):
        raise InputError("witness", f"{url!r} is not an http(s) URL")
    return WitnessEndpoint(url, parse_cosigner_key(key))


@dataclass(frozen=True, slots=True)
class CosignOutcome:
    """What one witness did with one checkpoint: ``cosigned`` (and at which witness size it started), or
    ``skipped`` (already cosigned, or waiting for a retry), or ``failed`` with the reason."""

    witness: str
    status: str
    size: int
    detail: str = ""


class Cosigner:
    """Gets the latest checkpoint of ``store`` cosigned by each of ``witnesses`` and stores the cosignatures."""

    def __init__(
        self,
        store: Store,
        witnesses: Sequence[WitnessEndpoint],
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import httpx

        self.store = store
        self.witnesses = tuple(witnesses)
        self._client = client or httpx.Client(timeout=timeout)
        self._clock = clock
        self._known: dict[CosignerVerifier, int] = {}
        self._retry_at: dict[CosignerVerifier, float] = {}
        self._failures: dict[CosignerVerifier, int] = {}
        self.lag: dict[str, int] = {}
        """Witness name -> entries of the latest checkpoint not covered by its latest stored cosignature."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval: float = 2.0) -> None:
        """Run :meth:`run_forever` on a daemon thread of its own until :meth:`close`."""
        self._thread = threading.Thread(target=self.run_forever, args=(interval,), name="lineage-cosigner", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the rounds (waiting for the one under way, if started with :meth:`start`) and close the HTTP
        client; the store stays open (it is the caller's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._client.close()

    def run_once(self, *, force: bool = False) -> list[CosignOutcome]:
        """One round: each witness that has not cosigned the latest checkpoint is asked to (a witness in its
        backoff is skipped unless ``force``). Never raises for a witness's failure: it is in the outcome."""
        latest = self.store.latest_checkpoint()
        if latest is None:
            return []
        outcomes = []
        for witness in self.witnesses:
            outcomes.append(self._one(witness, latest, force))
            stored = self.store.cosigned_size(witness.verifier.name, witness.verifier.key_id)
            self.lag[witness.verifier.name] = latest.size - stored
        return outcomes

    def run_forever(self, interval: float = 2.0) -> None:
        """Run rounds every ``interval`` seconds until :meth:`close`; errors are logged, never raised."""
        while not self._stop.is_set():
            try:
                for outcome in self.run_once():
                    if outcome.status == "failed":
                        log.warning("witness %s: %s", outcome.witness, outcome.detail)
            except LedgerError as e:
                log.error("cosigning round failed: %s", e)
            self._stop.wait(interval)

    def _one(self, witness: WitnessEndpoint, latest: CheckpointRow, force: bool) -> CosignOutcome:
        key = witness.verifier
        if verify_cosignatures(latest.note, [key]):
            return CosignOutcome(key.name, "skipped", latest.size, "already cosigned")
        if not force and self._clock() < self._retry_at.get(key, 0.0):
            return CosignOutcome(key.name, "skipped", latest.size, "waiting to retry")
        try:
            self._submit(witness, latest)
        except LedgerError as e:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            self._retry_at[key] = self._clock() + min(_MAX_BACKOFF_S, 2.0 ** min(failures, 6))
            return CosignOutcome(key.name, "failed", latest.size, str(e))
        self._failures.pop(key, None)
        self._retry_at.pop(key, None)
        return CosignOutcome(key.name, "cosigned", latest.size)

    def _submit(self, witness: WitnessEndpoint, latest: CheckpointRow) -> None:
        key = witness.verifier
        old = self._known.get(key)
        if old is None:
            old = self.store.cosigned_size(key.name, key.key_id)
        note = _log_signed(latest.note, self.witnesses)
        for _ in range(2):
            status, body = self._post(witness, old, latest.size, note)
            if status == 200:
                self._store(witness, latest, note, body)
                self._known[key] = latest.size
                return
            if status == 409:
                witness_size = _size_body(body)
                self._known[key] = witness_size
                if witness_size > latest.size:
                    raise TransportError(
                        f"the witness has cosigned size {witness_size}, beyond this log's latest checkpoint "
                        f"{latest.size}: the log was rolled back or forked"
                    )
                old = witness_size
                continue
            raise TransportError(f"the witness refused the checkpoint of size {latest.size}: {status} {body[:200]!r}")
        raise TransportError("the witness kept answering 409 Conflict")

    def _post(self, witness: WitnessEndpoint, old: int, size: int, note: str) -> tuple[int, bytes]:
        import httpx

        proof = consistency_proof(old, size, TiledNodeReader(self.store.nodes)) if 0 < old < size else []
        if len(proof) > MAX_PROOF_LINES:
            raise InputError("proof", f"a consistency proof of {len(proof)} hashes is more than the protocol allows")
        body = format_add_checkpoint(AddCheckpoint(old, tuple(proof), note))
        try:
            response = self._client.post(witness.add_checkpoint_url, content=body)
        except httpx.HTTPError as e:
            raise TransportError(f"cannot reach the witness at {witness.url}: {e}") from e
        return response.status_code, response.content

    def _store(self, witness: WitnessEndpoint, latest: CheckpointRow, note: str, body: bytes) -> None:
        try:
            lines = body.decode("utf-8")
            found = verify_cosignatures(note + lines, [witness.verifier])
        except (UnicodeDecodeError, LedgerError) as e:
            raise TransportError(f"the witness's answer is not a valid cosignature: {e}") from e
        if not found:
            raise TransportError("the witness answered 200 without a cosignature by its key")
        cosignature = found[0]
        self.store.add_cosignatures(latest.size, [(witness.verifier.name, witness.verifier.key_id, cosignature.line)])


def _size_body(body: bytes) -> int:
    text = body.decode("ascii", errors="replace")
    if not text.endswith("\n") or not text[:-1].isdigit() or (len(text) > 2 and text[0] == "0"):
        raise TransportError(f"the witness's 409 answer is not a tree size: {body[:40]!r}")
    return int(text[:-1])


def _log_signed(note: str, witnesses: Sequence[WitnessEndpoint]) -> str:
    """The note without the configured witnesses' cosignatures (the log's signature and others are kept)."""
    text, signatures = note_signatures(note)
    ours = {(w.verifier.name, w.verifier.key_id) for w in witnesses}
    lines = note[len(text) + 1 :].split("\n")[:-1]
    pairs = zip(lines, signatures, strict=True)
    kept = [line + "\n" for line, (name, key_id, _) in pairs if (name, key_id) not in ours]
    return text + "\n" + "".join(kept)


def cosign_metrics(cosigner: Cosigner, registry: Any, origin: str) -> None:
    """Export ``cosigner.lag`` as ``lineage_witness_lag_entries{log, witness}`` on a Prometheus registry."""
    from prometheus_client import Gauge

    gauge = Gauge(
        "lineage_witness_lag_entries",
        "Entries in the latest checkpoint not yet covered by a stored cosignature of the witness",
        ["log", "witness"],
        registry=registry,
    )
    for witness in cosigner.witnesses:
        gauge.labels(origin, witness.verifier.name).set_function(partial(_lag_of, cosigner, witness.verifier.name))


def _lag_of(cosigner: Cosigner, name: str) -> float:
    return float(cosigner.lag.get(name, 0))

"""Asking a Time Stamping Authority (RFC 3161 over HTTP, RFC 3161 section 3.4) to timestamp checkpoints.

The request is a ``TimeStampReq`` with the SHA-256 imprint of the checkpoint's signed text (token.py), a
random nonce and ``certReq`` true (so the token carries the TSA's certificate), POSTed as
``application/timestamp-query``. The reply must be ``granted``, echo the nonce and the imprint, and (when
trust anchors are configured) verify under them before the token is stored with the checkpoint.

It runs off the write path: from ``lineage timestamp request`` (once), or on a thread of its own beside
``lineage serve`` (:meth:`Timestamper.start`). Each round timestamps the latest checkpoint if it has no
token yet; checkpoints sealed and superseded between two rounds are not timestamped (a later checkpoint's
token, with a consistency proof, dates them no later than its genTime). A TSA that is down is retried with
a backoff; ingest never waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lineage_ledger.errors import InputError, LedgerError, TransportError
from lineage_ledger.timestamps.token import TimestampCheck, checkpoint_signed_text, read_token, verify_timestamp

if TYPE_CHECKING:
    import httpx
    from cryptography.x509 import Certificate

    from lineage_ledger.store.base import Store

__all__ = ["TimestampOutcome", "Timestamper", "request_timestamp"]

log = logging.getLogger("lineage_ledger.timestamps")

_MAX_BACKOFF_S = 60.0
_MAX_REPLY = 1 << 20


def request_timestamp(
    client: httpx.Client, url: str, note: str, anchors: Sequence[Certificate] = ()
) -> tuple[bytes, TimestampCheck | None]:
    """A TimeStampToken (DER) of the checkpoint ``note`` from the TSA at ``url``, and (with ``anchors``) what
    verifying it found. TransportError if the TSA cannot be reached, refuses, or answers with a token that is
    not of this request; SignatureError if it does not verify under ``anchors``."""
    import httpx
    from rfc3161_client import HashAlgorithm, PKIStatus, TimestampRequestBuilder, decode_timestamp_response

    if not url.startswith(("http://", "https://")):
        raise InputError("tsa_url", f"{url!r} is not an http(s) URL")
    builder = TimestampRequestBuilder().hash_algorithm(HashAlgorithm.SHA256).cert_request(cert_request=True)
    request = builder.nonce(nonce=True).data(checkpoint_signed_text(note)).build()
    try:
        response = client.post(url, content=request.as_bytes(), headers={"Content-Type": "application/timestamp-query"})
    except httpx.HTTPError as e:
        raise TransportError(f"cannot reach the TSA at {url}: {e}") from e
    if response.status_code != 200:
        raise TransportError(f"the TSA at {url} answered {response.status_code}: {response.content[:200]!r}")
    if response.headers.get("content-type", "").split(";")[0].strip() != "application/timestamp-reply":
        raise TransportError(f"the TSA at {url} answered {response.headers.get('content-type')!r}, not a timestamp")
    if len(response.content) > _MAX_REPLY:
        raise TransportError(f"the TSA's reply is larger than {_MAX_REPLY} bytes")
    try:
        reply = decode_timestamp_response(response.content)
    except ValueError as e:
        raise TransportError(f"the TSA's reply is not an RFC 3161 TimeStampResp: {e}") from e
    if PKIStatus(reply.status) not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        raise TransportError(f"the TSA refused the request: status {reply.status} {reply.status_string}")
    token = reply.time_stamp_token()
    info = read_token(token).tst_info
    if info.nonce != request.nonce or info.message_imprint.message != request.message_imprint.message:
        raise TransportError("the TSA's token does not answer this request (nonce or imprint differ)")
    return token, verify_timestamp(token, note, anchors) if anchors else None


@dataclass(frozen=True, slots=True)
class TimestampOutcome:
    """What one round did with the latest checkpoint: ``timestamped``, ``skipped`` (it has a token, or the
    TSA is in its backoff) or ``failed`` with the reason."""

    size: int
    status: str
    detail: str = ""


class Timestamper:
    """Gets the latest checkpoint of ``store`` timestamped by the TSA at ``url`` and stores the token."""

    def __init__(
        self,
        store: Store,
        url: str,
        *,
        anchors: Sequence[Certificate] = (),
        timeout: float = 10.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import httpx

        self.store = store
        self.url = url
        self.anchors = tuple(anchors)
        self._client = client or httpx.Client(timeout=timeout)
        self._clock = clock
        self._retry_at = 0.0
        self._failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval: float = 2.0) -> None:
        """Run :meth:`run_forever` on a daemon thread of its own until :meth:`close`."""
        self._thread = threading.Thread(
            target=self.run_forever, args=(interval,), name="lineage-timestamper", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the rounds (waiting for the one under way) and close the HTTP client; the store stays open."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._client.close()

    def run_once(self, *, force: bool = False) -> TimestampOutcome | None:
        """One round (None if the ledger has no checkpoint yet). Never raises for the TSA's failure: it is in
        the outcome."""
        latest = self.store.latest_checkpoint()
        if latest is None:
            return None
        if self.store.timestamp(latest.size) is not None:
            return TimestampOutcome(latest.size, "skipped", "already timestamped")
        if not force and self._clock() < self._retry_at:
            return TimestampOutcome(latest.size, "skipped", "waiting to retry")
        try:
            token, _ = request_timestamp(self._client, self.url, latest.note, self.anchors)
        except LedgerError as e:
            self._failures += 1
            self._retry_at = self._clock() + min(_MAX_BACKOFF_S, 2.0 ** min(self._failures, 6))
            return TimestampOutcome(latest.size, "failed", str(e))
        self.store.add_timestamp(latest.size, token)
        self._failures, self._retry_at = 0, 0.0
        return TimestampOutcome(latest.size, "timestamped")

    def run_forever(self, interval: float = 2.0) -> None:
        """Run rounds every ``interval`` seconds until :meth:`close`; errors are logged, never raised."""
        while not self._stop.is_set():
            try:
                outcome = self.run_once()
                if outcome is not None and outcome.status == "failed":
                    log.warning("timestamp of checkpoint %d: %s", outcome.size, outcome.detail)
            except LedgerError as e:
                log.error("timestamping round failed: %s", e)
            self._stop.wait(interval)

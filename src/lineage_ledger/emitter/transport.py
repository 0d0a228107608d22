"""How an emitter hands a signed batch to a ledger, and what the ledger's answer means.

A :class:`Transport` sends one envelope and returns one receipt per event, in batch order. Its errors tell
the emitter what to do next:

* retry later (the events stay in the spool): :class:`~lineage_ledger.errors.TransportError` (unreachable,
  5xx, a wrong URL), :class:`~lineage_ledger.errors.PushbackError` (503, 429 or 408; ``retry_after`` from
  the ``Retry-After`` header), and :class:`~lineage_ledger.errors.KeyringError` /
  :class:`~lineage_ledger.errors.SignatureError` (401 or 403: the API key or the producer key is not
  accepted *yet*: an operator fixes configuration, and nothing should be thrown away meanwhile);
* dead-letter (the events themselves are refused): :class:`~lineage_ledger.errors.InputError` (400, 413,
  422 and other 4xx; ``field`` names the event when one event is at fault, ``events[3].payload.ip``) and
  :class:`~lineage_ledger.errors.ConflictError` (409: an event id already holds other bytes).

:class:`HttpTransport` speaks the service's ``POST /v1/batches`` (httpx is imported only when one is
built); :class:`LocalTransport` calls :meth:`Ledger.append` in this process.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import msgspec

from lineage_ledger.errors import (
    ConflictError,
    EnvelopeError,
    InputError,
    KeyringError,
    PushbackError,
    SignatureError,
    StoreError,
    TransportError,
)
from lineage_ledger.ledger.writer import Receipt

if TYPE_CHECKING:
    import httpx

    from lineage_ledger.ledger.writer import Ledger

__all__ = ["BATCHES_PATH", "GroupingTransport", "HttpTransport", "LocalTransport", "Transport"]

BATCHES_PATH: Final = "/v1/batches"
_DEFAULT_RETRY_AFTER: Final = 1.0
_MAX_RETRY_AFTER: Final = 300.0


class Transport(Protocol):
    """Delivers signed batch envelopes to a ledger. Called from one thread at a time.

    ``send`` returns once the ledger has durably committed the batch, with one receipt per event in batch
    order (a duplicate event's receipt points at its first recording). It raises as the module docstring
    describes; anything else it raises is treated as retryable.
    """

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        """Deliver one envelope; the receipts of its events, in order."""
        ...

    def close(self) -> None:
        """Release connections; the transport is not used afterwards."""
        ...


@runtime_checkable
class GroupingTransport(Transport, Protocol):
    """A transport that wants a batch split before signing (Kafka: one envelope per partition).

    The emitter asks ``route(events)`` for groups of positions, seals each group as its own envelope and hands
    them all to ``send_groups(envelopes, groups)``, which returns the receipts in group order and raises as
    ``send`` does (for the batch as a whole).
    """

    def route(self, events: Sequence[bytes]) -> list[list[int]]:
        """Positions of ``events`` grouped by destination, each group in batch order."""
        ...

    def send_groups(self, envelopes: Sequence[bytes], groups: Sequence[Sequence[bytes]]) -> Sequence[Receipt]:
        """Deliver one envelope per group; the receipts of their events, group after group."""
        ...


class LocalTransport:
    """Appends to a :class:`~lineage_ledger.ledger.writer.Ledger` in this process (tests, benchmarks, tools).

    The caller keeps owning the ledger (``close`` does not close it). Calls are serialised with a lock,
    because a Ledger is a single sequencer. Store failures other than a conflict become TransportError, so
    the emitter retries them instead of dead-lettering events the ledger never judged.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        """``Ledger.append`` the envelope and return its receipts."""
        with self._lock:
            try:
                return self.ledger.append(envelope).receipts
            except ConflictError:
                raise
            except StoreError as e:
                raise TransportError(f"the ledger's store failed: {e}") from e

    def close(self) -> None:
        """Nothing to release: the ledger belongs to the caller."""


class _ReceiptWire(msgspec.Struct, frozen=True):
    event_id: str
    index: int
    verdict: str
    duplicate: bool


class _BatchResultWire(msgspec.Struct, frozen=True):
    receipts: list[_ReceiptWire]


class _ProblemWire(msgspec.Struct, frozen=True):
    type: str = ""
    title: str = ""
    detail: str = ""
    field: str | None = None


_RESULT = msgspec.json.Decoder(_BatchResultWire)
_PROBLEM = msgspec.json.Decoder(_ProblemWire)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: delay-seconds or an HTTP-date), capped at
    five minutes; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - (time.time() if now is None else now), 0.0), _MAX_RETRY_AFTER)


class HttpTransport:
    """POSTs envelopes to ``<url>/v1/batches`` of a lineage service, with ``Authorization: Bearer <api_key>``.

    A 2xx answer must carry ``{"receipts": [{event_id, index, verdict, duplicate, ...}]}``; anything else
    maps to an error class as the module docstring says. Messages name the endpoint without credentials and
    never include the API key. ``http_transport`` replaces httpx's network transport (httpx.MockTransport
    in tests).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as e:  # pragma: no cover - depends on the installed extras
            raise TransportError("HttpTransport needs httpx: pip install 'lineage-ledger[emitter]'") from e
        self._httpx = httpx
        base = httpx.URL(url.rstrip("/") + BATCHES_PATH)
        if base.scheme not in ("http", "https"):
            raise InputError("url", "must be an http:// or https:// URL")
        self.endpoint = str(base)
        self._shown = str(base.copy_with(username=None, password=None, query=None, fragment=None))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=http_transport)

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        """POST one envelope; the receipts of its events, in order."""
        httpx = self._httpx
        try:
            response = self._client.post(self.endpoint, content=envelope)
        except httpx.HTTPError as e:
            raise TransportError(f"POST {self._shown}: {type(e).__name__}: {e}") from e
        status = response.status_code
        if 200 <= status < 300:
            try:
                result = _RESULT.decode(response.content)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                raise TransportError(f"POST {self._shown} answered {status} without receipts: {e}") from e
            return [Receipt(r.event_id, r.index, r.verdict, r.duplicate) for r in result.receipts]
        raise self._error(status, response.headers.get("retry-after"), response.content)

    def _error(self, status: int, retry_after: str | None, body: bytes) -> Exception:
        try:
            problem = _PROBLEM.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            problem = _ProblemWire()
        said = f"POST {self._shown} answered {status}" + (f" {problem.title}" if problem.title else "")
        detail = problem.detail or said
        if status in (408, 429, 503):
            wait = retry_after_seconds(retry_after)
            return PushbackError(f"{said}: {detail}", _DEFAULT_RETRY_AFTER if wait is None else wait)
        if status >= 500 or status in (404, 405):
            return TransportError(f"{said}: {detail}")
        if status in (401, 403):
            if problem.type.endswith(":bad-signature"):
                return SignatureError(f"{said}: {detail}")
            return KeyringError(f"{said}: {detail}")
        if status == 409:
            return ConflictError(detail)
        if status == 400:
            return EnvelopeError(problem.field or "envelope", f"400: {problem.detail}" if problem.detail else said)
        return InputError(problem.field or "envelope", f"{status}: {problem.detail}" if problem.detail else said)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"HttpTransport({self._shown!r})"

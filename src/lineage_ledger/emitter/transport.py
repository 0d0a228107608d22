"""How an emitter hands a signed batch to a ledger, and what the ledger's answer means.

A :class:`Transport` sends one envelope and returns one receipt per event, in batch order. What the emitter
does after an error is decided by :func:`refuses_events` alone:

* dead-letter, only when the ledger judged the events themselves invalid:
  :class:`~lineage_ledger.errors.InputError` (400, 413, 422 and other 4xx; ``field`` names the event when one
  event is at fault, ``events[3].payload.ip``) and a :class:`~lineage_ledger.errors.ConflictError` that names
  an event (409 ``events[k].event_id: ... already recorded ... with different bytes``: the producer used one
  event id for two different events);
* retry later, keeping the events in the spool, for everything else, since none of it says anything about
  the events: :class:`~lineage_ledger.errors.TransportError` (unreachable, 5xx, a wrong URL, 421: an event
  sent to a shard that does not own it, and a 409 that names no event: an index already taken or another
  conflict inside the ledger, such as a second writer or a stale server),
  :class:`~lineage_ledger.errors.PushbackError` (503, 429 or 408; ``retry_after`` from the ``Retry-After``
  header; a server that is not ready answers 503), :class:`~lineage_ledger.errors.KeyringError` /
  :class:`~lineage_ledger.errors.SignatureError` (401 or 403: the API key or the producer key is not
  accepted *yet*: an operator fixes configuration, and nothing should be thrown away meanwhile), and any
  other exception.

:class:`HttpTransport` speaks the service's ``POST /v1/batches`` (httpx is imported only when one is
built); :class:`ShardedHttpTransport` does the same for a sharded ledger served by one ``lineage serve`` per
shard; :class:`LocalTransport` calls :meth:`Ledger.append` in this process.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import msgspec

from lineage_ledger.core.model import read_subject
from lineage_ledger.core.note import NoteVerifier, parse_verifier_key
from lineage_ledger.core.receipt import PromisedPath, Receipt, SignedPromise
from lineage_ledger.core.routing import shard_of
from lineage_ledger.emitter.logwatch import LogWatch
from lineage_ledger.errors import (
    ConflictError,
    EnvelopeError,
    InconsistencyError,
    InputError,
    KeyringError,
    LedgerError,
    NotFoundError,
    PushbackError,
    SignatureError,
    StoreError,
    TransportError,
    event_at,
)

if TYPE_CHECKING:
    import httpx

    from lineage_ledger.ledger.writer import Ledger

__all__ = [
    "BATCHES_PATH",
    "ERRORS_TO_RETRY",
    "GroupingTransport",
    "HttpTransport",
    "LocalTransport",
    "ShardedHttpTransport",
    "Transport",
    "refuses_events",
]

BATCHES_PATH: Final = "/v1/batches"
ERRORS_TO_RETRY: Final = (TransportError, PushbackError, KeyringError, SignatureError)
"""Errors that are always retried; with every error :func:`refuses_events` does not accept (see above)."""
_DEFAULT_RETRY_AFTER: Final = 1.0
_MAX_RETRY_AFTER: Final = 300.0


def refuses_events(error: BaseException) -> bool:
    """True if ``error`` means the ledger judged the events themselves invalid (the emitter dead-letters
    them); False if it says nothing against them (the emitter keeps them spooled and retries)."""
    if isinstance(error, ConflictError):
        return event_at(str(error)) is not None
    return isinstance(error, InputError)


def _conflict(detail: str) -> LedgerError:
    """A conflict answered by the ledger: the event's (ConflictError) only when it names the event whose id
    holds other bytes; otherwise the ledger's own (an index already taken), which is retried."""
    if event_at(detail) is not None:
        return ConflictError(detail)
    return TransportError(f"the ledger refused a write for a conflict inside it, not in the events: {detail}")


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
    because a Ledger is a single sequencer. Store failures other than a conflict an event caused (its id
    recorded with other bytes) become TransportError, so the emitter retries them instead of dead-lettering
    events the ledger never judged.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        """``Ledger.append`` the envelope and return its receipts."""
        with self._lock:
            try:
                return self.ledger.append(envelope).receipts
            except ConflictError as e:
                raise _conflict(str(e)) from e
            except StoreError as e:
                raise TransportError(f"the ledger's store failed: {e}") from e

    def close(self) -> None:
        """Nothing to release: the ledger belongs to the caller."""


class _ReceiptWire(msgspec.Struct, frozen=True):
    event_id: str
    index: int
    verdict: str
    duplicate: bool
    leaf: str | None = None
    path: list[str] | None = None
    promise: int | None = None


class _BatchResultWire(msgspec.Struct, frozen=True):
    receipts: list[_ReceiptWire]
    promises: list[dict[str, Any]] = msgspec.field(default_factory=list)
    checkpoint: str | None = None


class _ConsistencyWire(msgspec.Struct, frozen=True):
    proof: list[str]


class _ProblemWire(msgspec.Struct, frozen=True):
    type: str = ""
    title: str = ""
    detail: str = ""
    field: str | None = None


_RESULT = msgspec.json.Decoder(_BatchResultWire)
_CONSISTENCY = msgspec.json.Decoder(_ConsistencyWire)
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

    Each answer carries the log key's signed promise for its events (kept in the receipts) and the ledger's
    latest checkpoint, which :attr:`log_watch` checks against the one before (emitter.logwatch): give
    ``log_key`` (the log's verifier key, from outside the ledger) to have signatures checked too, and
    ``on_inconsistency`` to be called when the ledger's log does not extend what it showed before.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        http_transport: httpx.BaseTransport | None = None,
        log_key: NoteVerifier | str | None = None,
        on_inconsistency: Callable[[InconsistencyError], object] | None = None,
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
        self._base = str(httpx.URL(url.rstrip("/")))
        key = parse_verifier_key(log_key) if isinstance(log_key, str) else log_key
        self.log_watch = LogWatch(self._consistency, log_key=key, on_inconsistency=on_inconsistency)
        """The newest checkpoint this ledger showed, checked for consistency with the ones before."""

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
            return self._receipts(result)
        raise self._error(status, response.headers.get("retry-after"), response.content)

    def _receipts(self, result: _BatchResultWire) -> list[Receipt]:
        try:
            promises = [SignedPromise.from_json(p) for p in result.promises]
        except LedgerError as e:
            raise TransportError(f"POST {self._shown} answered with a malformed promise: {e}") from e
        for signed in promises:
            self.log_watch.check_promise(signed)
        self.log_watch.observe(result.checkpoint)
        out: list[Receipt] = []
        for r in result.receipts:
            if r.promise is None or r.leaf is None or r.path is None or not 0 <= r.promise < len(promises):
                out.append(Receipt(r.event_id, r.index, r.verdict, r.duplicate))
                continue
            try:
                leaf, path = bytes.fromhex(r.leaf), [bytes.fromhex(h) for h in r.path]
            except ValueError as e:
                raise TransportError(f"POST {self._shown} answered with a malformed receipt: {e}") from e
            promised = PromisedPath(promises[r.promise], r.index, path)
            out.append(Receipt(r.event_id, r.index, r.verdict, r.duplicate, leaf, promised))
        return out

    def _consistency(self, old: int, new: int) -> list[bytes]:
        """GET the ledger's consistency proof between two of its checkpoints (for :attr:`log_watch`)."""
        httpx = self._httpx
        url = f"{self._base}/v1/proofs/consistency"
        try:
            response = self._client.get(url, params={"old": old, "new": new})
        except httpx.HTTPError as e:
            raise TransportError(f"GET consistency proof {old} -> {new}: {type(e).__name__}: {e}") from e
        if response.status_code == 404:
            raise NotFoundError(f"the ledger has no signed checkpoint of size {old} or {new} any more")
        if response.status_code != 200:
            raise TransportError(f"GET consistency proof {old} -> {new} answered {response.status_code}")
        try:
            return [bytes.fromhex(h) for h in _CONSISTENCY.decode(response.content).proof]
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise TransportError(f"GET consistency proof {old} -> {new}: malformed answer: {e}") from e

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
        if status == 421:  # an event of another shard: the producer's routing is misconfigured, not the event
            return TransportError(f"{said} (check the shard URLs and --partitions): {detail}")
        if status in (401, 403):
            if problem.type.endswith(":bad-signature"):
                return SignatureError(f"{said}: {detail}")
            return KeyringError(f"{said}: {detail}")
        if status == 409:
            return _conflict(problem.detail)
        if status == 400:
            return EnvelopeError(problem.field or "envelope", f"400: {problem.detail}" if problem.detail else said)
        return InputError(problem.field or "envelope", f"{status}: {problem.detail}" if problem.detail else said)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"HttpTransport({self._shown!r})"


class ShardedHttpTransport:
    """Delivers to a sharded ledger (``lineage init --shards S``) served by one ``lineage serve`` per shard.

    ``urls[n]`` serves shard n (``ledger.shard-<n>.db``); ``partitions`` is the layout's partition count
    (``--partitions`` at init, which defaults to the number of shards). Each event goes to the shard that
    owns its subject (core.routing.shard_of: Kafka's murmur2 partitioner, modulo the partitions, modulo the
    shards), which is what each shard's ledger checks: the emitter groups a batch with :meth:`route`, signs
    one envelope per group, and :meth:`send_groups` posts the groups to their shards at the same time, one
    thread per shard, and returns once every shard has committed its part.

    Each shard's server process sequences and commits on its own interpreter lock, so with a core per shard,
    S shards take up to S times the events one server can (bench_emitter.py measures two shards; on this
    project's 2-core machine the cores themselves became the limit). Per token, order is kept: a token's
    events all go to one shard, in emit order. Across shards there is no order, as in any sharded log.

    Errors: if any shard failed retryably (unreachable, 5xx, pushback, a key not accepted yet), that is
    raised and the emitter re-sends the whole batch, whose events the shards that had committed answer as
    duplicates. Otherwise a refusal (4xx, 409) is raised with its ``events[k]`` rewritten to the event's
    position in the batch, so the emitter dead-letters the right one. ``api_key`` is one key for every
    shard or one per shard (each server keeps its own key file).
    """

    def __init__(
        self,
        urls: Sequence[str],
        partitions: int | None = None,
        api_key: str | Sequence[str | None] | None = None,
        *,
        timeout: float = 10.0,
        http_transports: Sequence[httpx.BaseTransport] | None = None,
    ) -> None:
        if not urls:
            raise InputError("urls", "name the server of every shard, shard 0 first")
        self.partitions = len(urls) if partitions is None else partitions
        shard_of("token:0", self.partitions, len(urls))  # InputError now if they do not divide
        keys = [api_key] * len(urls) if api_key is None or isinstance(api_key, str) else list(api_key)
        if len(keys) != len(urls):
            raise InputError("api_key", f"{len(keys)} API keys for {len(urls)} shards")
        if http_transports is not None and len(http_transports) != len(urls):
            raise InputError("http_transports", f"{len(http_transports)} for {len(urls)} shards")
        self.shards: list[HttpTransport] = [
            HttpTransport(
                url, key, timeout=timeout, http_transport=None if http_transports is None else http_transports[n]
            )
            for n, (url, key) in enumerate(zip(urls, keys, strict=True))
        ]
        self._pool = ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="lineage-shard-post")
        self._home: dict[str, int] = {}
        self._routed: list[list[int]] = []

    def shard_of(self, event: bytes) -> int:
        """The shard that owns ``event``'s subject (InputError if the bytes name none)."""
        subject, _ = read_subject(event)
        home = self._home.get(subject)
        if home is None:
            if len(self._home) >= 1 << 16:
                self._home.clear()
            home = self._home[subject] = shard_of(subject, self.partitions, len(self.shards))
        return home

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        """Post one envelope sealed elsewhere to the shard of its events, which must all have one shard (the
        emitter uses route/send_groups instead, so each envelope holds one shard's events)."""
        from lineage_ledger.core.envelope import open_envelope

        events = list(open_envelope(envelope).events)
        homes = {self.shard_of(e) for e in events}
        if not homes:
            raise InputError("envelope", "holds no events")
        if len(homes) > 1:
            raise InputError("envelope", f"its events belong to shards {sorted(homes)}; seal one envelope per shard")
        self._routed = [list(range(len(events)))]
        return self.send_groups([envelope], [events])

    def route(self, events: Sequence[bytes]) -> list[list[int]]:
        """Positions of ``events`` grouped by shard (shard order), each group in batch order."""
        groups: dict[int, list[int]] = {}
        for pos, event in enumerate(events):
            groups.setdefault(self.shard_of(event), []).append(pos)
        self._routed = [groups[n] for n in sorted(groups)]
        return self._routed

    def send_groups(self, envelopes: Sequence[bytes], groups: Sequence[Sequence[bytes]]) -> list[Receipt]:
        """Post each envelope to its group's shard, all at once; the receipts, group after group."""
        targets = [self.shard_of(group[0]) for group in groups]
        futures = [
            self._pool.submit(self.shards[n].send, envelope) for n, envelope in zip(targets, envelopes, strict=True)
        ]
        answers: list[Sequence[Receipt]] = []
        failures: list[tuple[int, Exception]] = []
        for g, future in enumerate(futures):
            try:
                answers.append(future.result())
            except Exception as e:  # every post is waited for before anything is raised
                failures.append((g, e))
        if not failures:
            return [receipt for receipts in answers for receipt in receipts]
        retryable = [e for _, e in failures if not refuses_events(e)]
        if retryable:
            raise retryable[0]
        g, refusal = failures[0]
        raise self._in_batch(refusal, g, groups)

    def _in_batch(self, error: Exception, group: int, groups: Sequence[Sequence[bytes]]) -> Exception:
        """``error`` with the ``events[k]`` it names (k within the group's envelope) made a batch position."""
        routed = self._routed
        positions = routed[group] if len(routed) == len(groups) and len(routed[group]) == len(groups[group]) else None

        def moved(text: str) -> str:
            at = event_at(text)
            if at is None:
                return text
            k, end = at
            if positions is None or k >= len(positions):
                return "events" + text[end:]  # cannot say which: the emitter refuses the batch
            return f"events[{positions[k]}]" + text[end:]

        if isinstance(error, InputError):
            return type(error)(moved(error.field), error.reason)
        if isinstance(error, ConflictError):
            return ConflictError(moved(str(error)))
        return error

    def close(self) -> None:
        """Close every shard's connections and the posting threads."""
        self._pool.shutdown(wait=True)
        for shard in self.shards:
            shard.close()

    def __repr__(self) -> str:
        return f"ShardedHttpTransport({[s.endpoint for s in self.shards]!r}, partitions={self.partitions})"

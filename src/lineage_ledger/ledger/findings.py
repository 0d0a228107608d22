"""Findings: anomalies in the recorded history, each with a rule id, a severity and the entries involved.

Two kinds of rule run in one engine:

* lifecycle verdicts. The writer judges every token event with the state machine (core.lifecycle) and
  records the broken rule's id as the entry's verdict. A finding is raised for every entry whose verdict is
  not "ok", with that id as its rule (token.use_without_issue, token.reissued, token.use_after_revoke,
  token.use_after_expiry, token.refresh_after_rotation, ...), so findings and verdicts never disagree.
* anomaly rules the state machine does not judge (``RULES`` below): two children of one refresh, clock
  skew and out-of-order occurred_at, unknown producers, heartbeat gaps, refresh storms and IP jumps.

``FindingsEngine.observe`` takes entries in log order, one at a time, with bounded memory: per-subject and
per-session state lives in LRUs of ``RuleSet.cache_size`` entries (state that falls out is forgotten, so a
rule may then miss an anomaly whose first half was evicted), plus one small record per producer.
``FindingsEngine.scan`` streams a store through the same code in chunks, so an incremental run over the
same entries gives exactly the findings of a full scan. Times are the ledger's own: ``detected_at`` is the
recorded_at of the entry that made the finding knowable, never the wall clock.

Sinks deliver findings: ``LogSink`` (the logging module), ``JsonLinesSink`` (one canonical JSON object per
line, for a SIEM); ``lineage_ledger.webhook.WebhookSink`` posts JSON batches over HTTP (an adapter, since it
does network I/O). ``Ledger.add_listener(engine.observe_rows)`` runs the rules as entries are committed.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final, Generic, Literal, Protocol, TypeVar

from lineage_ledger.core import lifecycle
from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.entry import EventEntry, KeyChange, KeyEntry, decode_entry
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import TokenEvent, decode_event
from lineage_ledger.errors import InputError
from lineage_ledger.ledger.keyring import ProducerKey
from lineage_ledger.store.base import EntryRow, Store

if TYPE_CHECKING:
    pass

__all__ = [
    "ALL_RULES",
    "RULES",
    "SEVERITIES",
    "Finding",
    "FindingSink",
    "FindingsEngine",
    "JsonLinesSink",
    "LogSink",
    "RuleSet",
    "Severity",
    "scan",
]

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = ("low", "medium", "high", "critical")

RULES: Final[dict[str, str]] = {
    "token.refresh_replay": "two different tokens refreshed or rotated from one parent within the replay window "
    "(a replayed or stolen refresh token)",
    "time.skew": "occurred_at is ahead of recorded_at by more than the skew tolerance, or behind it by more "
    "than the delay limit",
    "time.out_of_order": "occurred_at goes backwards within one subject by more than the skew tolerance",
    "producer.unknown": "an event from a producer that had no key in the keyring (or is not in the known "
    "producer set) when it was recorded",
    "producer.heartbeat_gap": "no entry from a producer for longer than its heartbeat gap",
    "token.refresh_storm": "more refreshes and rotations in one token family within the storm window than "
    "the storm threshold",
    "session.ip_jump": "one token family used from two networks (a different /16 for IPv4, /48 for IPv6) "
    "within the session window",
    "token.use_after_ancestor_revoke": "a step on a token after a token it was refreshed, rotated or exchanged "
    "from (at any distance) was revoked: RFC 7009 section 2.1 ends the whole grant",
}
"""The anomaly rules this module adds to the lifecycle rules (core.lifecycle.RULES)."""

ALL_RULES: Final[dict[str, str]] = {**lifecycle.RULES, **RULES}
"""Every rule id a finding can carry, with what it means."""

DEFAULT_SEVERITY: Final[dict[str, Severity]] = {
    "token.use_without_issue": "high",
    "token.reissued": "high",
    "token.use_after_revoke": "critical",
    "token.use_after_expiry": "high",
    "token.use_after_rotation": "high",
    "token.activation_window": "medium",
    "token.activation_without_mfa": "high",
    "token.activation_state": "medium",
    "token.orphan_child": "medium",
    "token.parent_unknown": "high",
    "token.refresh_after_rotation": "critical",
    "token.parent_revoked": "high",
    "token.parent_expired": "medium",
    "token.refresh_replay": "critical",
    "time.skew": "low",
    "time.out_of_order": "medium",
    "producer.unknown": "high",
    "producer.heartbeat_gap": "medium",
    "token.refresh_storm": "medium",
    "session.ip_jump": "high",
    "token.use_after_ancestor_revoke": "critical",
}

_S: Final = 1_000_000_000
_BIRTHS: Final = frozenset({"ISSUED", "ORIGIN", "REFRESHED", "ROTATED"})
_REFRESHES: Final = frozenset({"REFRESHED", "ROTATED"})
_AFTER_END: Final = frozenset({"token.use_after_revoke", "token.use_after_expiry", "token.use_after_rotation"})
_PARENT_ENDED: Final = frozenset({"token.refresh_after_rotation", "token.parent_revoked", "token.parent_expired"})


def _ns(hlc: str) -> int:
    return int(hlc[:19])


def _time_ns(value: str | int) -> int:
    return value if isinstance(value, int) else _ns(value)


def _seconds(ns: int) -> str:
    return f"{ns / _S:g} s"


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly: which rule, how bad, about which subject, resting on which log entries."""

    rule: str
    severity: Severity
    subject: str
    """``token:<id>``, ``asset:<id>``, ``policy:<id>`` or ``producer:<id>``."""
    indices: tuple[int, ...]
    """Log indices of the entries involved, ascending (each can be proven with Lineage.proofs)."""
    message: str
    detected_at: str
    """The ledger's HLC reading when the finding became knowable (recorded_at of the entry that raised it)."""

    def to_json(self) -> dict[str, Any]:
        """A plain dict (canonical_bytes of it is the JSON-lines form)."""
        return {
            "detected_at": self.detected_at,
            "indices": list(self.indices),
            "message": self.message,
            "rule": self.rule,
            "severity": self.severity,
            "subject": self.subject,
        }


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Thresholds of the anomaly rules. Durations are nanoseconds; ``None`` switches a check off."""

    skew_tolerance_ns: int = 60 * _S
    """occurred_at may be this far ahead of recorded_at, and go this far backwards within a subject."""
    max_delay_ns: int | None = 24 * 3600 * _S
    """occurred_at may be this far behind recorded_at (late delivery); ORIGIN backfills are exempt."""
    refresh_replay_window_ns: int = 10 * 60 * _S
    """Two children of one parent refreshed within this window are a replay."""
    refresh_storm_count: int = 10
    refresh_storm_window_ns: int = 10 * 60 * _S
    """``refresh_storm_count`` refreshes or rotations in one family within this window are a storm."""
    ip_jump_window_ns: int = 3600 * _S
    """Two uses of one family from different networks within this window are a jump."""
    ipv4_prefix: int = 16
    ipv6_prefix: int = 48
    heartbeat_gap_ns: Mapping[str, int] = field(default_factory=dict)
    """Per producer: the longest silence (by the ledger's clock) that is not a gap. Producers named here
    are expected from the first entry the engine sees on."""
    default_heartbeat_gap_ns: int | None = None
    """The gap for every other producer, from its first event on (None: only the producers named above)."""
    known_producers: frozenset[str] | None = None
    """If set, the only producers that are not unknown; otherwise a producer is known once a key of it is
    registered in the log (or handed to the engine)."""
    disabled: frozenset[str] = frozenset()
    """Rule ids that raise no finding."""
    severity: Mapping[str, Severity] = field(default_factory=dict)
    """Overrides of DEFAULT_SEVERITY by rule id."""
    cache_size: int = 100_000
    """Subjects, sessions and parents whose state stays in memory (each an LRU of this size)."""

    def __post_init__(self) -> None:
        if self.refresh_storm_count < 2:
            raise InputError("refresh_storm_count", "must be at least 2")
        if self.cache_size < 1:
            raise InputError("cache_size", "must be at least 1")
        for name in ("skew_tolerance_ns", "refresh_replay_window_ns", "refresh_storm_window_ns", "ip_jump_window_ns"):
            if getattr(self, name) < 0:
                raise InputError(name, "must not be negative")
        for producer, gap in self.heartbeat_gap_ns.items():
            if gap <= 0:
                raise InputError(f"heartbeat_gap_ns.{producer}", "must be positive")
        for rule, level in self.severity.items():
            if level not in SEVERITIES:
                raise InputError(f"severity.{rule}", f"must be one of {', '.join(SEVERITIES)}")

    def severity_of(self, rule: str) -> Severity:
        """The severity a finding of ``rule`` carries (unknown future verdict ids are "medium")."""
        return self.severity.get(rule) or DEFAULT_SEVERITY.get(rule, "medium")

    def heartbeat_gap(self, producer: str) -> int | None:
        """The heartbeat gap of ``producer``, or None if its silence is never a finding."""
        return self.heartbeat_gap_ns.get(producer, self.default_heartbeat_gap_ns)


K = TypeVar("K")
V = TypeVar("V")


class _LRU(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class _SubjectMemo:
    root: str
    """The token family (session) the token belongs to; the subject itself for non-tokens."""
    max_ns: int = -1
    max_index: int = -1
    born_index: int | None = None
    ended_index: int | None = None
    """The entry that revoked, expired or rotated the token away."""
    parent: str | None = None
    """The token it was refreshed, rotated or exchanged from."""
    revoked: tuple[int, int] | None = None
    """(occurred ns, index) of its first valid REVOKED."""
    children: deque[tuple[int, int, str]] = field(default_factory=deque)
    """Recent refresh/rotation births from this token: (occurred ns, index, child token id)."""


@dataclass(slots=True)
class _SessionMemo:
    refreshes: deque[tuple[int, int]] = field(default_factory=deque)
    ip: tuple[int, int, str, ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
    """The latest address seen: (occurred ns, index, address, network)."""


@dataclass(slots=True)
class _ProducerMemo:
    last_ns: int
    last_index: int | None
    reported: bool = False


_MAX_CHILDREN: Final = 16


class FindingSink(Protocol):
    """Where findings go. ``emit`` receives them in the order they were found."""

    def emit(self, findings: Sequence[Finding]) -> None:
        """Deliver ``findings`` (raise a LedgerError subclass if they could not be delivered)."""
        ...

    def close(self) -> None:
        """Release what the sink holds."""
        ...


class FindingsEngine:
    """Runs every rule over entries in log order; one engine per log.

    ``keys`` seeds the keyring when the engine starts after the log's first key entries (a tail that
    resumes mid-log: pass ``Ledger.keyring.producer_keys()``); key entries it observes are added either way.
    """

    def __init__(
        self,
        rules: RuleSet | None = None,
        *,
        keys: Iterable[ProducerKey | KeyChange] = (),
        sinks: Sequence[FindingSink] = (),
    ) -> None:
        self.rules = rules or RuleSet()
        self.sinks = list(sinks)
        self._keys: dict[str, tuple[str, str]] = {}
        for key in keys:
            self._keys.setdefault(key.key_id, (key.producer, key.valid_from))
        self._subjects: _LRU[str, _SubjectMemo] = _LRU(self.rules.cache_size)
        self._sessions: _LRU[str, _SessionMemo] = _LRU(self.rules.cache_size)
        self._producers: dict[str, _ProducerMemo] = {}
        self._next_deadline: int | None = None
        self._position = 0
        self._last_recorded = ""

    @property
    def position(self) -> int:
        """The index of the next entry the engine expects (entries below it were observed or skipped)."""
        return self._position

    def tracked(self) -> dict[str, int]:
        """How many subjects, sessions and producers the engine holds state for (bounded by cache_size)."""
        return {"subjects": len(self._subjects), "sessions": len(self._sessions), "producers": len(self._producers)}

    # -- feeding ----------------------------------------------------------------------------------------

    def observe(self, row: EntryRow) -> list[Finding]:
        """Run the rules over one entry; returns (and sends to the sinks) the findings it raises.

        Entries must come in log order. One whose index is below ``position`` was already seen and is
        ignored, so replaying an overlap is harmless.
        """
        found = self._observe(row)
        self._emit(found)
        return found

    def observe_rows(self, rows: Sequence[EntryRow]) -> list[Finding]:
        """observe() over committed rows, sending their findings to the sinks as one batch.

        Fits ``Ledger.add_listener``, so rules run incrementally as batches are committed.
        """
        found = [f for row in rows for f in self._observe(row)]
        self._emit(found)
        return found

    def finish(self, now: str | int | None = None) -> list[Finding]:
        """Heartbeat gaps still open at ``now`` (an HLC reading or ns; default: the last entry observed)."""
        if now is None:
            if not self._last_recorded:
                return []
            now = self._last_recorded
        when = now if isinstance(now, str) else format_reading(now, 0)
        found: list[Finding] = []
        self._check_heartbeats(_time_ns(now), when, found)
        self._emit(found)
        return found

    def scan(self, store: Store, *, now: str | int | None = None, chunk: int = 4096) -> Iterator[Finding]:
        """Every finding in ``store`` from ``position`` to its current end, then open heartbeat gaps.

        Streams ``chunk`` entries at a time; each chunk's findings go to the sinks as one batch.
        """
        end = store.size()
        pos = self._position
        while pos < end:
            stop = min(end, pos + chunk)
            batch: list[Finding] = []
            for row in store.entries(pos, stop):
                found = self._observe(row)
                batch.extend(found)
                yield from found
            self._emit(batch)
            pos = stop
        yield from self.finish(now)

    def _emit(self, findings: list[Finding]) -> None:
        if findings:
            for sink in self.sinks:
                sink.emit(findings)

    # -- the rules --------------------------------------------------------------------------------------

    def _finding(
        self, out: list[Finding], rule: str, subject: str, indices: Iterable[int], message: str, at: str
    ) -> None:
        if rule in self.rules.disabled:
            return
        out.append(Finding(rule, self.rules.severity_of(rule), subject, tuple(sorted(set(indices))), message, at))

    def _observe(self, row: EntryRow) -> list[Finding]:
        if row.index < self._position:
            return []
        self._position = row.index + 1
        entry = decode_entry(row.body)
        now = entry.recorded_at
        now_ns = _ns(now)
        out: list[Finding] = []
        if not self._last_recorded:
            for producer, gap in self.rules.heartbeat_gap_ns.items():
                self._producers[producer] = _ProducerMemo(now_ns, None)
                self._deadline(now_ns + gap)
        self._last_recorded = now
        self._check_heartbeats(now_ns, now, out)
        if isinstance(entry, KeyEntry):
            self._apply_key(entry.change)
            return out
        if not isinstance(entry, EventEntry):
            return out
        event = decode_event(bytes(entry.event))
        index = entry.index
        subject = row.subject
        self._producer_rules(entry, subject, now_ns, out)

        memo = self._subjects.get(subject)
        if memo is None:
            memo = _SubjectMemo(root=subject.removeprefix("token:"))
            self._subjects.put(subject, memo)
        occurred_ns = _ns(event.occurred_at)
        self._time_rules(event.event_type, subject, index, occurred_ns, now_ns, memo, now, out)
        if isinstance(event, TokenEvent):
            self._token_rules(event, entry.verdict, subject, index, occurred_ns, memo, now, out)
        elif entry.verdict != "ok":  # not judged today; kept so a future rule can never go unreported
            self._verdict(entry.verdict, subject, index, None, event.event_type, now, out)
        return out

    def _apply_key(self, change: KeyChange) -> None:
        if change.action == "register":
            self._keys.setdefault(change.key_id, (change.producer, change.valid_from))

    def _deadline(self, at: int) -> None:
        if self._next_deadline is None or at < self._next_deadline:
            self._next_deadline = at

    def _check_heartbeats(self, now_ns: int, now: str, out: list[Finding]) -> None:
        if self._next_deadline is None or now_ns <= self._next_deadline:
            return
        self._next_deadline = None
        for producer in sorted(self._producers):
            memo = self._producers[producer]
            gap = self.rules.heartbeat_gap(producer)
            if gap is None or memo.reported:
                continue
            if now_ns - memo.last_ns > gap:
                memo.reported = True
                since = f"index {memo.last_index}" if memo.last_index is not None else "the start of the scan"
                self._finding(
                    out,
                    "producer.heartbeat_gap",
                    "producer:" + producer,
                    () if memo.last_index is None else (memo.last_index,),
                    f"no entry from {producer} for more than {_seconds(gap)} (silent since {since}, "
                    f"{_seconds(now_ns - memo.last_ns)} before {now})",
                    now,
                )
            else:
                self._deadline(memo.last_ns + gap)

    def _producer_rules(self, entry: EventEntry, subject: str, now_ns: int, out: list[Finding]) -> None:
        producer = entry.producer
        known = self.rules.known_producers
        if known is not None:
            if producer not in known:
                self._finding(
                    out,
                    "producer.unknown",
                    subject,
                    (entry.index,),
                    f"event from {producer}, which is not a known producer",
                    entry.recorded_at,
                )
        else:
            key = self._keys.get(entry.key_id)
            if key is None or key[0] != producer or key[1] > entry.recorded_at:
                self._finding(
                    out,
                    "producer.unknown",
                    subject,
                    (entry.index,),
                    f"event from {producer} signed with key {entry.key_id}, which the keyring did not hold "
                    f"for {producer} at {entry.recorded_at}",
                    entry.recorded_at,
                )
        memo = self._producers.get(producer)
        if memo is None:
            memo = self._producers[producer] = _ProducerMemo(now_ns, entry.index)
        memo.last_ns, memo.last_index, memo.reported = now_ns, entry.index, False
        gap = self.rules.heartbeat_gap(producer)
        if gap is not None:
            self._deadline(now_ns + gap)

    def _time_rules(
        self,
        event_type: str,
        subject: str,
        index: int,
        occurred_ns: int,
        now_ns: int,
        memo: _SubjectMemo,
        now: str,
        out: list[Finding],
    ) -> None:
        rules = self.rules
        ahead = occurred_ns - now_ns
        if ahead > rules.skew_tolerance_ns:
            self._finding(
                out,
                "time.skew",
                subject,
                (index,),
                f"{event_type} occurred {_seconds(ahead)} after it was recorded "
                f"(tolerance {_seconds(rules.skew_tolerance_ns)}): the producer's clock runs ahead",
                now,
            )
        elif rules.max_delay_ns is not None and -ahead > rules.max_delay_ns and event_type != "ORIGIN":
            self._finding(
                out,
                "time.skew",
                subject,
                (index,),
                f"{event_type} was recorded {_seconds(-ahead)} after it occurred "
                f"(limit {_seconds(rules.max_delay_ns)})",
                now,
            )
        if memo.max_index >= 0 and occurred_ns < memo.max_ns - rules.skew_tolerance_ns:
            self._finding(
                out,
                "time.out_of_order",
                subject,
                (memo.max_index, index),
                f"{event_type} occurred {_seconds(memo.max_ns - occurred_ns)} before the subject's event at "
                f"index {memo.max_index}, which was recorded earlier",
                now,
            )
        if occurred_ns > memo.max_ns:
            memo.max_ns, memo.max_index = occurred_ns, index

    def _verdict(
        self, verdict: str, subject: str, index: int, related: int | None, event_type: str, now: str, out: list[Finding]
    ) -> None:
        what = lifecycle.RULES.get(verdict, f"the ledger recorded verdict {verdict}")
        also = f" (see index {related})" if related is not None else ""
        indices = (index,) if related is None else (related, index)
        self._finding(out, verdict, subject, indices, f"{event_type}: {what}{also}", now)

    def _token_rules(
        self,
        event: TokenEvent,
        verdict: str,
        subject: str,
        index: int,
        occurred_ns: int,
        memo: _SubjectMemo,
        now: str,
        out: list[Finding],
    ) -> None:
        kind = event.event_type
        parent_id = event.payload.parent_token_id
        parent = self._subjects.get("token:" + parent_id) if parent_id else None

        if verdict != "ok":
            related = None
            if verdict in _AFTER_END:
                related = memo.ended_index
            elif verdict == "token.reissued":
                related = memo.born_index
            elif verdict in _PARENT_ENDED and parent is not None:
                related = parent.ended_index
            self._verdict(verdict, subject, index, related, kind, now, out)

        if kind in _BIRTHS and verdict != "token.reissued" and memo.born_index is None:
            memo.born_index = index
            if kind in _REFRESHES and parent_id is not None:
                memo.root = parent.root if parent is not None else parent_id
        if verdict == "ok" and kind in {"REVOKED", "EXPIRED"} and memo.ended_index is None:
            memo.ended_index = index
        if kind in _BIRTHS and parent_id is not None and memo.parent is None:
            memo.parent = parent_id
        if verdict == "ok" and kind == "REVOKED" and memo.revoked is None:
            memo.revoked = (occurred_ns, index)

        if kind in _REFRESHES and parent_id is not None:
            if parent is None:
                parent = _SubjectMemo(root=parent_id)
                self._subjects.put("token:" + parent_id, parent)
            if kind == "ROTATED" and verdict == "ok" and parent.ended_index is None:
                parent.ended_index = index
            self._replay_rule(event, parent, index, occurred_ns, now, out)
            self._storm_rule(memo.root, index, occurred_ns, now, out)

        if event.payload.ip is not None:
            self._ip_rule(event, memo.root, index, occurred_ns, now, out)
        if verdict == "ok" and kind not in {"REVOKED", "EXPIRED"}:
            self._ancestor_revoked(kind, subject, index, occurred_ns, memo, now, out)

    def _ancestor_revoked(
        self, kind: str, subject: str, index: int, occurred_ns: int, memo: _SubjectMemo, now: str, out: list[Finding]
    ) -> None:
        """token.use_after_ancestor_revoke: the nearest ancestor (still in memory) revoked before this step."""
        seen = {subject}
        ancestor_id = memo.parent
        while ancestor_id is not None and "token:" + ancestor_id not in seen:
            seen.add("token:" + ancestor_id)
            ancestor = self._subjects.get("token:" + ancestor_id)
            if ancestor is None:
                return
            if ancestor.revoked is not None and ancestor.revoked[0] <= occurred_ns:
                self._finding(
                    out,
                    "token.use_after_ancestor_revoke",
                    subject,
                    (ancestor.revoked[1], index),
                    f"{kind} after its ancestor {ancestor_id} was revoked (index {ancestor.revoked[1]})",
                    now,
                )
                return
            ancestor_id = ancestor.parent

    def _session(self, root: str) -> _SessionMemo:
        session = self._sessions.get(root)
        if session is None:
            session = _SessionMemo()
            self._sessions.put(root, session)
        return session

    def _replay_rule(
        self, event: TokenEvent, parent: _SubjectMemo, index: int, occurred_ns: int, now: str, out: list[Finding]
    ) -> None:
        window = self.rules.refresh_replay_window_ns
        children = parent.children
        while children and (occurred_ns - children[0][0] > window or len(children) >= _MAX_CHILDREN):
            children.popleft()
        siblings = [(i, c) for ns, i, c in children if c != event.token_id and abs(occurred_ns - ns) <= window]
        children.append((occurred_ns, index, event.token_id))
        if siblings:
            parent_id = event.payload.parent_token_id
            self._finding(
                out,
                "token.refresh_replay",
                "token:" + str(parent_id),
                [i for i, _ in siblings] + [index],
                f"{len(siblings) + 1} tokens were refreshed or rotated from {parent_id} within "
                f"{_seconds(window)}: the refresh token was replayed or stolen",
                now,
            )

    def _storm_rule(self, root: str, index: int, occurred_ns: int, now: str, out: list[Finding]) -> None:
        rules = self.rules
        refreshes = self._session(root).refreshes
        refreshes.append((occurred_ns, index))
        while refreshes and occurred_ns - refreshes[0][0] > rules.refresh_storm_window_ns:
            refreshes.popleft()
        if len(refreshes) >= rules.refresh_storm_count:
            self._finding(
                out,
                "token.refresh_storm",
                "token:" + root,
                [i for _, i in refreshes],
                f"{len(refreshes)} refreshes or rotations in the family of {root} within "
                f"{_seconds(rules.refresh_storm_window_ns)}",
                now,
            )
            refreshes.clear()

    def _ip_rule(
        self, event: TokenEvent, root: str, index: int, occurred_ns: int, now: str, out: list[Finding]
    ) -> None:
        rules = self.rules
        address = str(event.payload.ip)
        session = self._session(root)
        last = session.ip
        if last is not None and last[2] == address:  # the common case: the session keeps its address
            session.ip = (occurred_ns, index, address, last[3])
            return
        network = _network(address, rules.ipv4_prefix, rules.ipv6_prefix)
        if network is None:
            return  # not an address: nothing to compare
        if (
            last is not None
            and last[3].version == network.version
            and last[3] != network
            and abs(occurred_ns - last[0]) <= rules.ip_jump_window_ns
        ):
            self._finding(
                out,
                "session.ip_jump",
                "token:" + event.token_id,
                (last[1], index),
                f"{event.event_type} from {address} ({network}) {_seconds(abs(occurred_ns - last[0]))} after "
                f"the family of {root} was seen at {last[2]} ({last[3]})",
                now,
            )
        session.ip = (occurred_ns, index, address, network)


@functools.lru_cache(maxsize=65_536)
def _network(address: str, ipv4_prefix: int, ipv6_prefix: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)


def scan(
    store: Store,
    rules: RuleSet | None = None,
    *,
    sinks: Sequence[FindingSink] = (),
    now: str | int | None = None,
    chunk: int = 4096,
) -> Iterator[Finding]:
    """Every finding in ``store`` from its first entry (a fresh FindingsEngine's full scan)."""
    return FindingsEngine(rules, sinks=sinks).scan(store, now=now, chunk=chunk)


# -- sinks ------------------------------------------------------------------------------------------------

_LEVELS: Final[dict[str, int]] = {
    "low": logging.INFO,
    "medium": logging.WARNING,
    "high": logging.ERROR,
    "critical": logging.CRITICAL,
}


class LogSink:
    """Logs each finding at a level that follows its severity (low INFO ... critical CRITICAL).

    The record's ``finding`` attribute holds ``Finding.to_json()`` for structured handlers.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("lineage_ledger.findings")

    def emit(self, findings: Sequence[Finding]) -> None:
        """Log every finding."""
        for f in findings:
            self.logger.log(
                _LEVELS[f.severity],
                "%s %s on %s at %s: %s",
                f.severity,
                f.rule,
                f.subject,
                ",".join(map(str, f.indices)),
                f.message,
                extra={"finding": f.to_json()},
            )

    def close(self) -> None:
        """Nothing to release."""


class JsonLinesSink:
    """Appends one canonical JSON object per finding and line (keys sorted) to a file or an open stream.

    A path is opened for appending and closed by ``close``; a stream is flushed after every batch and
    left open.
    """

    def __init__(self, target: str | os.PathLike[str] | IO[bytes] | IO[str]) -> None:
        self._owned = isinstance(target, str | os.PathLike)
        stream: IO[Any] = open(target, "ab") if isinstance(target, str | os.PathLike) else target  # noqa: SIM115
        self._stream = stream
        self._text = isinstance(stream, io.TextIOBase)

    def emit(self, findings: Sequence[Finding]) -> None:
        """Write and flush one line per finding."""
        data = b"".join(canonical_bytes(f.to_json()) + b"\n" for f in findings)
        self._stream.write(data.decode("utf-8") if self._text else data)
        self._stream.flush()

    def close(self) -> None:
        """Close the file if this sink opened it (a stream handed in stays open)."""
        if self._owned:
            self._stream.close()

    def __enter__(self) -> JsonLinesSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Findings: anomalies in the recorded history, each with a rule id, a severity and the entries involved.

Two kinds of rule run in one engine:

* lifecycle verdicts. The writer judges every token event with the state machine (core.lifecycle) and
  records the broken rule's id as the entry's verdict. A finding is raised for every entry whose verdict is
  not "ok", with that id as its rule (token.use_without_issue, token.reissued, token.use_after_revoke,
  token.use_after_expiry, token.refresh_after_rotation, ...), so findings and verdicts never disagree.
* anomaly rules the state machine does not judge (``RULES``): two children of one refresh, clock
  skew and out-of-order occurred_at, unknown producers, heartbeat gaps, refresh storms and IP jumps.

``FindingsEngine.observe`` takes entries in log order, one at a time, with bounded memory: per-subject and
per-session state lives in LRUs of ``RuleSet.cache_size`` entries (state that falls out is forgotten, so a
rule may then miss an anomaly whose first half was evicted), plus one small record per producer.
``FindingsEngine.scan`` streams a store through the same code in chunks, so an incremental run over the
same entries gives exactly the findings of a full scan. Times are the ledger's own: ``detected_at`` is the
recorded_at of the entry that made the finding knowable, never the wall clock.

Rules and ``Finding`` are in ledger.finding_rules, the engine's memory in ledger.finding_memory, sinks in
ledger.finding_sinks (every public name is importable from here): ``LogSink`` (the logging module),
``JsonLinesSink`` (one canonical JSON object per line, for a SIEM); ``lineage_ledger.webhook.WebhookSink``
posts JSON batches over HTTP (an adapter, since it does network I/O). ``Ledger.add_listener(engine.observe_rows)``
runs the rules as entries are committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from lineage_ledger.core import lifecycle
from lineage_ledger.core.entry import EventEntry, KeyChange, KeyEntry, decode_entry
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import TokenEvent, decode_event
from lineage_ledger.ledger.finding_memory import LRU, MAX_CHILDREN, ProducerMemo, SessionMemo, SubjectMemo, network_of
from lineage_ledger.ledger.finding_rules import (
    ALL_RULES,
    RULES,
    SECOND_NS,
    SEVERITIES,
    Finding,
    RuleSet,
    Severity,
)
from lineage_ledger.ledger.finding_sinks import FindingSink, JsonLinesSink, LogSink
from lineage_ledger.ledger.keyring import ProducerKey
from lineage_ledger.store.base import EntryRow, Store

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

_BIRTHS: Final = frozenset({"ISSUED", "ORIGIN", "REFRESHED", "ROTATED"})
_REFRESHES: Final = frozenset({"REFRESHED", "ROTATED"})
_AFTER_END: Final = frozenset({"token.use_after_revoke", "token.use_after_expiry", "token.use_after_rotation"})
_PARENT_ENDED: Final = frozenset({"token.refresh_after_rotation", "token.parent_revoked", "token.parent_expired"})


def _ns(hlc: str) -> int:
    return int(hlc[:19])


def _time_ns(value: str | int) -> int:
    return value if isinstance(value, int) else _ns(value)


def _seconds(ns: int) -> str:
    return f"{ns / SECOND_NS:g} s"


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
        self._subjects: LRU[str, SubjectMemo] = LRU(self.rules.cache_size)
        self._sessions: LRU[str, SessionMemo] = LRU(self.rules.cache_size)
        self._producers: dict[str, ProducerMemo] = {}
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
                self._producers[producer] = ProducerMemo(now_ns, None)
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
            memo = SubjectMemo(root=subject.removeprefix("token:"))
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
            memo = self._producers[producer] = ProducerMemo(now_ns, entry.index)
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
        memo: SubjectMemo,
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
        memo: SubjectMemo,
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
                parent = SubjectMemo(root=parent_id)
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
        self, kind: str, subject: str, index: int, occurred_ns: int, memo: SubjectMemo, now: str, out: list[Finding]
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

    def _session(self, root: str) -> SessionMemo:
        session = self._sessions.get(root)
        if session is None:
            session = SessionMemo()
            self._sessions.put(root, session)
        return session

    def _replay_rule(
        self, event: TokenEvent, parent: SubjectMemo, index: int, occurred_ns: int, now: str, out: list[Finding]
    ) -> None:
        window = self.rules.refresh_replay_window_ns
        children = parent.children
        while children and (occurred_ns - children[0][0] > window or len(children) >= MAX_CHILDREN):
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
        network = network_of(address, rules.ipv4_prefix, rules.ipv6_prefix)
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

"""What a monitor can check of each new entry from the entries alone, in log order. Pure: no I/O.

Checked, for every entry the monitor has read (it reads every entry from index 0):

* the bytes decode as a ledger entry (core.entry.decode_entry, with its pattern checks);
* its ``index`` field is its position in the log;
* ``recorded_at`` never goes backwards;
* its per-subject hash chain links: ``prev`` is the leaf hash of the previous entry of the same subject
  (64 zeros for the first), from the chain heads the monitor keeps;
* a seal's block header: the block number follows the previous one, ``first``/``last`` cover exactly the
  entries since the previous seal, ``root`` is the RFC 9162 root of their leaf hashes, ``prev_header`` is the
  hash of the previous header, and the HLC range matches the entries;
* the lifecycle verdict of each token event, judged again by core.lifecycle under the given policy, from the
  token states the monitor has built from every earlier token event.

Not checkable from tiles alone: producer signatures and the envelope digest (tiles carry entries, not the
signed envelopes), whether a producer key was registered when it signed, and the block's subject-map root.
A verdict whose parent token lives in another shard's log is not local to a shard log: judge shard logs
with ``verdicts=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from lineage_ledger.core import lifecycle
from lineage_ledger.core.entry import (
    BLOCKS_SUBJECT,
    ZERO_HASH,
    EventEntry,
    SealEntry,
    decode_entry,
    header_hash,
    own_subject,
)
from lineage_ledger.core.lifecycle import LifecyclePolicy, TokenState
from lineage_ledger.core.merkle import root_of
from lineage_ledger.core.model import Event, TokenEvent, head_ok
from lineage_ledger.errors import InputError

__all__ = ["EntryFollower", "EntryProblem"]

_EVENT = msgspec.json.Decoder(Event)


class _Subject(msgspec.Struct):
    kind: str
    token_id: str | None = None
    asset_id: str | None = None
    policy_id: str | None = None


_SUBJECT = msgspec.json.Decoder(_Subject)


@dataclass(frozen=True, slots=True)
class EntryProblem:
    """One entry that is not well formed: its index, which check (``entry_format``, ``position``, ``clock``,
    ``chain``, ``block``, ``verdict``) and what is wrong."""

    index: int
    check: str
    message: str


@dataclass
class EntryFollower:
    """The state the checks need, carried from one entry to the next (and, via ``to_json``, across runs)."""

    next_index: int = 0
    heads: dict[str, str] = field(default_factory=dict)
    """Subject -> hex leaf hash of its latest entry."""
    block_number: int = 0
    block_first: int = 0
    block_leaves: list[str] = field(default_factory=list)
    prev_header: str = ZERO_HASH.hex()
    hlc_first: str = ""
    last_recorded: str = ""
    tokens: dict[str, TokenState] = field(default_factory=dict)
    verdicts: bool = True
    policy: LifecyclePolicy = field(default_factory=LifecyclePolicy)

    def check(self, index: int, body: bytes, leaf: bytes) -> list[EntryProblem]:
        """Check entry ``index`` (its bytes and leaf hash, already tied to a signed root) and advance."""
        if index != self.next_index:
            raise InputError("index", f"entry {index} given, the follower expects {self.next_index}")
        self.next_index += 1
        problems: list[EntryProblem] = []

        def problem(check: str, message: str) -> None:
            problems.append(EntryProblem(index, check, f"entry {index}: {message}"))

        try:
            entry = decode_entry(body)
        except InputError as e:
            problem("entry_format", f"bytes are not a ledger entry ({e.reason})")
            self.block_leaves.append(leaf.hex())
            return problems
        if entry.index != index:
            problem("position", f"its bytes say index {entry.index} (moved or reordered)")
        if entry.recorded_at < self.last_recorded:
            problem("clock", f"recorded_at {entry.recorded_at} goes backwards (after {self.last_recorded})")
        if not self.hlc_first:
            self.hlc_first = entry.recorded_at
        if isinstance(entry, SealEntry):
            self._seal(entry, index, problem)
            subject = BLOCKS_SUBJECT
        else:
            self.block_leaves.append(leaf.hex())
            self.last_recorded = entry.recorded_at
            if isinstance(entry, EventEntry):
                subject = self._event(entry, problem)
            else:
                subject = own_subject(entry)[1]
        if subject:
            if entry.prev != self.heads.get(subject, ZERO_HASH.hex()):
                problem("chain", f"the chain of {subject} is broken (prev does not link to its previous entry)")
            self.heads[subject] = leaf.hex()
        return problems

    def _seal(self, entry: SealEntry, index: int, problem: Any) -> None:
        h = entry.block
        if h.number != self.block_number:
            problem("block", f"seals block {h.number}, expected block {self.block_number}")
        if h.first != self.block_first or h.last != index - 1:
            problem("block", f"block {h.number} covers {h.first}..{h.last}, expected {self.block_first}..{index - 1}")
        if h.root != root_of([bytes.fromhex(x) for x in self.block_leaves]).hex():
            problem("block", f"block {h.number}: root does not match its entries")
        if h.prev_header != self.prev_header:
            problem("block", f"block {h.number}: prev_header is not the hash of the previous block's header")
        if h.hlc_first != self.hlc_first or h.hlc_last != self.last_recorded:
            problem("block", f"block {h.number}: HLC range does not match its entries")
        self.block_number = h.number + 1
        self.block_first = index + 1
        self.block_leaves = []
        self.prev_header = header_hash(h).hex()
        self.hlc_first = ""
        self.last_recorded = entry.recorded_at

    def _event(self, entry: EventEntry, problem: Any) -> str:
        raw = bytes(entry.event)
        try:
            head = _SUBJECT.decode(raw)
        except msgspec.DecodeError as e:
            problem("entry_format", f"the event names no subject ({e})")
            return ""
        if head.kind == "token":
            subject = f"token:{head.token_id}"
        elif head.kind == "policy":
            subject = f"policy:{head.policy_id}"
        else:
            subject = f"asset:{head.asset_id}"
        if self.verdicts and head.kind == "token":
            self._judge(raw, entry.verdict, problem)
        return subject

    def _judge(self, raw: bytes, said: str, problem: Any) -> None:
        try:
            event = _EVENT.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return  # bytes the event model rejects were never judged by the ledger either
        if type(event) is not TokenEvent or not head_ok(event):
            return
        verdict, changes = lifecycle.apply(event, lambda t: self.tokens.get(t, lifecycle.NEVER_SEEN), self.policy)
        self.tokens.update(changes)
        if verdict != said:
            problem("verdict", f"records verdict {said!r}; the lifecycle rules give {verdict!r}")

    def to_json(self) -> dict[str, Any]:
        """The follower as plain JSON values (a monitor's state file holds it)."""
        return {
            "next_index": self.next_index,
            "heads": self.heads,
            "block_number": self.block_number,
            "block_first": self.block_first,
            "block_leaves": self.block_leaves,
            "prev_header": self.prev_header,
            "hlc_first": self.hlc_first,
            "last_recorded": self.last_recorded,
            "tokens": {t: [s.state, s.issued_ns, s.expires_ns, s.parent] for t, s in self.tokens.items()},
        }

    @classmethod
    def from_json(cls, value: Any, *, verdicts: bool, policy: LifecyclePolicy) -> EntryFollower:
        """The follower ``to_json`` wrote; InputError naming the state if it is not one."""
        try:
            return cls(
                next_index=int(value["next_index"]),
                heads={str(k): str(v) for k, v in value["heads"].items()},
                block_number=int(value["block_number"]),
                block_first=int(value["block_first"]),
                block_leaves=[str(x) for x in value["block_leaves"]],
                prev_header=str(value["prev_header"]),
                hlc_first=str(value["hlc_first"]),
                last_recorded=str(value["last_recorded"]),
                tokens={
                    str(t): TokenState(str(s), int(i), int(e), str(p)) for t, (s, i, e, p) in value["tokens"].items()
                },
                verdicts=verdicts,
                policy=policy,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError("state.entries", f"not a monitor's entry state ({e})") from None

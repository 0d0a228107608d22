"""Policy checks: every lifecycle verdict judged again. The token events are replayed in log order through
the state machine under the policy recorded when the ledger was created, and each result must equal the
verdict the entry records, so a sequencer that recorded "ok" for a use after revocation (or flagged an
honest event) is caught."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from lineage_ledger.core import lifecycle
from lineage_ledger.core.lifecycle import LifecyclePolicy, TokenState
from lineage_ledger.core.model import Event, TokenEvent, head_ok
from lineage_ledger.ledger.verification.report import MAX_PROBLEMS, Problem

__all__ = ["Verdicts", "read_events"]

# The coordinator reads token events as model.read_event does (same type, same checks), a chunk's at once.
_EVENTS: Final = msgspec.json.Decoder(list[Event])
_EVENT: Final = msgspec.json.Decoder(Event)


def read_events(array: bytes, sizes: Sequence[int]) -> list[Event | None]:
    """The events of a JSON array of events whose elements are ``sizes`` bytes long, as model.read_event
    reads them: None for an element the event model rejects (or that is not even JSON)."""
    events: list[Event | None] = []
    with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):
        events = list(_EVENTS.decode(array))
    if len(events) == len(sizes):
        return events
    # Some event is not one the event model accepts: read them one by one and leave out those that fail.
    events = []
    at = 1
    for size in sizes:
        try:
            events.append(_EVENT.decode(array[at : at + size]))
        except (msgspec.DecodeError, UnicodeDecodeError):
            events.append(None)
        at += size + 1
    return events


class Verdicts:
    """Judges every token event again, in log order, from the events the chunks read."""

    def __init__(self, policy: LifecyclePolicy, local: Callable[[str], bool] | None) -> None:
        self.policy = policy
        self.local = local
        self.states: dict[str, TokenState] = {}
        self.problems: list[Problem] = []
        self.judged = 0
        self.revoked: dict[str, int] = {}
        """Token subject -> index of the entry that revoked it, as the writer fills the revocation set."""

    def absorb(self, indices: Sequence[int], said: Sequence[str], events: bytes, sizes: Sequence[int]) -> None:
        """Judge a chunk's token events, in log order: the entries at ``indices`` record the verdicts ``said``
        and hold the events of the JSON array ``events``, whose elements are ``sizes`` bytes long."""
        self.judge(indices, said, read_events(events, sizes))

    def judge(self, indices: Sequence[int], said: Sequence[str], events: Sequence[Event | None]) -> None:
        """Judge token events already read (None for bytes the event model rejects), in log order."""
        states, policy, local, problems = self.states, self.policy, self.local, self.problems
        get = states.get
        never = lifecycle.NEVER_SEEN
        apply = lifecycle.apply

        def state_of(token_id: str) -> TokenState:
            return get(token_id, never)

        judged = 0
        for idx, recorded, event in zip(indices, said, events, strict=True):
            if type(event) is not TokenEvent or not head_ok(event):
                continue  # not a token event after all, or bytes the event model rejects: not judged
            verdict, changes = apply(event, state_of, policy, local)
            if changes:
                states.update(changes)
                for tid, state in changes.items():
                    if state.state == "REVOKED":
                        self.revoked.setdefault("token:" + tid, idx)
            judged += 1
            if verdict != recorded and len(problems) < MAX_PROBLEMS:
                problems.append(
                    Problem(
                        "verdict",
                        f"entry {idx}: records verdict {recorded!r}; the lifecycle rules give {verdict!r}",
                        idx,
                    )
                )
        self.judged += judged

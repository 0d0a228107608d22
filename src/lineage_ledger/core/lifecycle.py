"""The token lifecycle state machine: which step may follow which, and the id of the rule a step breaks.

The ledger never drops an authentic event. A step that breaks a rule is recorded with the rule's id as its
verdict, because that is exactly what an auditor needs to see; the token's state is left as it was, except
where the rule says otherwise below.

States: NONE (never seen), ISSUED, ACTIVE, ROTATED (replaced by a child), EXPIRED, REVOKED.

REFRESHED and ROTATED are recorded on the new (child) token and name the parent in
``payload.parent_token_id``; ROTATED also moves the parent to ROTATED. ISSUED with a parent is a token
exchange (RFC 8693).

Revocation cascade (RFC 7009 section 2.1: revoking a refresh token should invalidate the tokens issued
from the same grant). With ``LifecyclePolicy.revocation_cascade`` (the default) a token whose ancestor (its
parent by refresh, rotation or exchange, that parent's parent, ...) was revoked is no longer active. The
cascade is a read of the state, never a verdict: ``apply`` judges each event exactly as before, so entries
recorded before the setting existed keep their verdicts and every ledger verifies as it did. Readers apply
it (``active_at`` with ``ancestor_revoked``; ledger.cascade), and a use after an ancestor's revocation is a
finding (``token.use_after_ancestor_revoke``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from lineage_ledger.core.encoding import canonical_bytes, decode_json
from lineage_ledger.core.model import TokenEvent
from lineage_ledger.errors import InputError

__all__ = [
    "NEVER_SEEN",
    "PARENT_RULES",
    "RULES",
    "LifecyclePolicy",
    "TokenState",
    "apply",
    "effective_state",
    "replay",
    "revoked_ancestor",
]

NONE: Final = "NONE"
ISSUED: Final = "ISSUED"
ACTIVE: Final = "ACTIVE"
ROTATED: Final = "ROTATED"
EXPIRED: Final = "EXPIRED"
REVOKED: Final = "REVOKED"

RULES: Final = {
    "token.use_without_issue": "a token was used, activated, expired or refreshed before it was ever issued",
    "token.reissued": "a second ISSUED (or ORIGIN) for a token that already exists",
    "token.use_after_revoke": "a step on a token after it was revoked",
    "token.use_after_expiry": "a step on a token after it expired",
    "token.use_after_rotation": "a step on a token after it was rotated away",
    "token.activation_window": "ACTIVATED later than the activation window after ISSUED",
    "token.activation_without_mfa": "ACTIVATED without an MFA time, or with one outside the window",
    "token.activation_state": "ACTIVATED on a token that is not freshly issued",
    "token.orphan_child": "REFRESHED or ROTATED without a parent_token_id",
    "token.parent_unknown": "the parent of a refresh, rotation or exchange was never issued",
    "token.refresh_after_rotation": "a parent that was already rotated away was refreshed or rotated again",
    "token.parent_revoked": "the parent of a refresh, rotation or exchange was revoked",
    "token.parent_expired": "the parent of a refresh, rotation or exchange had expired",
}

_TERMINAL_RULE: Final = {
    REVOKED: "token.use_after_revoke",
    EXPIRED: "token.use_after_expiry",
    ROTATED: "token.use_after_rotation",
}
PARENT_RULES: Final = {  # the rule a birth breaks, by the state its parent is in
    NONE: "token.parent_unknown",
    REVOKED: "token.parent_revoked",
    EXPIRED: "token.parent_expired",
    ROTATED: "token.refresh_after_rotation",
}


@dataclass(frozen=True, slots=True)
class TokenState:
    """What the ledger knows of a token after its latest step."""

    state: str = NONE
    issued_ns: int = 0
    expires_ns: int = 0
    """When the token stops being valid by its own terms (payload.expires_at), 0 if it never said."""
    parent: str = ""
    """The token it was refreshed, rotated or exchanged from ("" for none): the link the cascade follows."""

    def active_at(self, now_ns: int, *, ancestor_revoked: bool = False) -> bool:
        """True if the token may be used at ``now_ns``: issued or active, not revoked, rotated or expired
        (by an EXPIRED event or by its own ``expires_at``), and, when the caller found a revoked ancestor
        under a cascading policy, never."""
        if self.state not in {ISSUED, ACTIVE} or ancestor_revoked:
            return False
        return self.expires_ns == 0 or now_ns < self.expires_ns

    def at(self, now_ns: int) -> TokenState:
        """This state as of ``now_ns``: EXPIRED once an issued or active token's ``expires_at`` has passed."""
        if self.state in {ISSUED, ACTIVE} and self.expires_ns and now_ns >= self.expires_ns:
            return dataclasses.replace(self, state=EXPIRED)
        return self

    def becoming(self, state: str) -> TokenState:
        """The same token in ``state`` (its times and parent kept)."""
        return dataclasses.replace(self, state=state)


NEVER_SEEN: Final = TokenState()


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """Guards of the state machine (configurable per ledger)."""

    activation_window_ns: int = 15 * 60 * 1_000_000_000
    require_mfa_for_activation: bool = True
    revocation_cascade: bool = True
    """Revoking a token ends every token derived from it (read-time; verdicts never depend on it)."""

    def to_text(self) -> str:
        """The policy as the ledger's settings record it (canonical JSON), so a verifier judges alike.

        ``revocation_cascade`` is written only when it is off, so a default policy reads as it always has
        and a ledger created before the setting existed cascades."""
        fields: dict[str, object] = {
            "activation_window_ns": self.activation_window_ns,
            "require_mfa_for_activation": self.require_mfa_for_activation,
        }
        if not self.revocation_cascade:
            fields["revocation_cascade"] = False
        return canonical_bytes(fields).decode()

    @classmethod
    def from_text(cls, text: str) -> LifecyclePolicy:
        """The policy ``to_text`` wrote; InputError if it is not one."""
        value = decode_json(text.encode(), field="lifecycle")
        required = {"activation_window_ns", "require_mfa_for_activation"}
        if not isinstance(value, dict) or not required <= set(value) <= required | {"revocation_cascade"}:
            raise InputError("lifecycle", "not a lifecycle policy")
        window, mfa = value["activation_window_ns"], value["require_mfa_for_activation"]
        cascade = value.get("revocation_cascade", True)
        if type(window) is not int or window < 0 or type(mfa) is not bool or type(cascade) is not bool:
            raise InputError("lifecycle", "activation_window_ns must be a non-negative integer, the others booleans")
        return cls(activation_window_ns=window, require_mfa_for_activation=mfa, revocation_cascade=cascade)


def _expiry(event: TokenEvent) -> int:
    at = event.payload.expires_at
    return _ns(at) if at is not None else 0


def _ns(hlc: str) -> int:
    return int(hlc[:19])  # the event model has already checked the reading's pattern


def apply(
    event: TokenEvent,
    state_of: Callable[[str], TokenState],
    policy: LifecyclePolicy,
    local: Callable[[str], bool] | None = None,
) -> tuple[str, dict[str, TokenState]]:
    """Judge one token event.

    ``state_of(token_id)`` gives the current state of any token. Returns the verdict ("ok" or a rule id in
    RULES) and the new states of the tokens the event changes (its own token, and for ROTATED its parent).

    ``local(token_id)`` (a shard of a sharded ledger) says whether a token's events are in this log. A parent
    that is not local is not judged here: its state is unknown to this log, so the parent rules are not
    applied and a rotation does not change it (ledger.shards documents the consequence).
    """
    kind = event.event_type
    tid = event.token_id
    cur = state_of(tid)
    s = cur.state

    if kind in {"ISSUED", "ORIGIN"}:
        if s != NONE:
            return "token.reissued", {}
        parent = event.payload.parent_token_id
        new = TokenState(ISSUED if kind == "ISSUED" else ACTIVE, _ns(event.occurred_at), _expiry(event), parent or "")
        if parent is not None and (local is None or local(parent)):
            pstate = state_of(parent).state
            if pstate in PARENT_RULES:
                return PARENT_RULES[pstate], {tid: new}
        return "ok", {tid: new}

    if kind in {"REFRESHED", "ROTATED"}:
        if s != NONE:
            return _TERMINAL_RULE.get(s, "token.reissued"), {}
        parent = event.payload.parent_token_id
        new = TokenState(ACTIVE, _ns(event.occurred_at), _expiry(event), parent or "")
        if parent is None:
            return "token.orphan_child", {tid: new}
        if local is not None and not local(parent):
            return "ok", {tid: new}
        pcur = state_of(parent)
        if pcur.state in PARENT_RULES:
            return PARENT_RULES[pcur.state], {tid: new}
        changes = {tid: new}
        if kind == "ROTATED":
            changes[parent] = pcur.becoming(ROTATED)
        return "ok", changes

    if s == NONE:
        return "token.use_without_issue", {}

    if kind == "REVOKED":
        return "ok", ({} if s == REVOKED else {tid: cur.becoming(REVOKED)})

    if s in _TERMINAL_RULE:
        if kind == "EXPIRED":
            return "ok", {}  # expiry of a token already ended changes nothing and breaks no rule
        return _TERMINAL_RULE[s], {}

    if kind == "EXPIRED":
        return "ok", {tid: cur.becoming(EXPIRED)}

    if kind == "ACTIVATED":
        if s != ISSUED:
            return "token.activation_state", {}
        at = _ns(event.occurred_at)
        if at - cur.issued_ns > policy.activation_window_ns:
            return "token.activation_window", {}
        if policy.require_mfa_for_activation:
            mfa = event.payload.mfa_at
            if mfa is None:
                return "token.activation_without_mfa", {}
            mfa_ns = _ns(mfa)
            if mfa_ns > at or at - mfa_ns > policy.activation_window_ns:
                return "token.activation_without_mfa", {}
        return "ok", {tid: cur.becoming(ACTIVE)}

    # USED on an ISSUED or ACTIVE token
    return "ok", {}


def replay(token_id: str, rows: Iterable[tuple[TokenEvent, str]], policy: LifecyclePolicy) -> TokenState:
    """A token's state from its history: its own events and its children's, in log order, with verdicts.

    Gives the state ``apply`` reached when the events were first recorded: a child's ROTATED moves this
    token to ROTATED exactly when its recorded verdict was "ok".
    """
    state = NEVER_SEEN
    for event, verdict in rows:
        if event.token_id == token_id:
            current = state

            def own_state(t: str, current: TokenState = current) -> TokenState:
                return current if t == token_id else NEVER_SEEN

            _, changes = apply(event, own_state, policy)
            state = changes.get(token_id, state)
        elif event.event_type == "ROTATED" and verdict == "ok" and event.payload.parent_token_id == token_id:
            state = state.becoming(ROTATED)
    return state


def revoked_ancestor(state: TokenState, state_of: Callable[[str], TokenState]) -> str | None:
    """The nearest ancestor of a token in ``state`` (parent, grandparent, ... by the ``parent`` links) whose
    own state is REVOKED, or None. A parent link that loops is followed once."""
    seen: set[str] = set()
    parent = state.parent
    while parent and parent not in seen:
        seen.add(parent)
        ancestor = state_of(parent)
        if ancestor.state == REVOKED:
            return parent
        parent = ancestor.parent
    return None


def effective_state(
    token_id: str, state_of: Callable[[str], TokenState], policy: LifecyclePolicy, now_ns: int
) -> tuple[TokenState, str | None]:
    """A token's state as a resource server should see it at ``now_ns``: its own state, EXPIRED once its
    ``expires_at`` has passed, and REVOKED when the policy cascades and an ancestor was revoked. Returns the
    state and the id of the revoked ancestor that ended it (None if none did)."""
    own = state_of(token_id).at(now_ns)
    if not policy.revocation_cascade or own.state not in {ISSUED, ACTIVE}:
        return own, None
    ancestor = revoked_ancestor(own, state_of)
    return (own, None) if ancestor is None else (own.becoming(REVOKED), ancestor)

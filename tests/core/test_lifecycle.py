"""Tests for lineage_ledger.core.lifecycle: every rule in RULES is reachable, and replay agrees with apply."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.lifecycle import NEVER_SEEN, RULES, LifecyclePolicy, TokenState, apply, replay
from lineage_ledger.core.model import TOKEN_EVENT_TYPES, TokenEvent, TokenPayload

T: Final = "a" * 64  # the token under test
P: Final = "eu-west-1:" + "b" * 64  # its parent
EVENT_ID: Final = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"
T0: Final = 1_763_891_234_000_000_000
SECOND: Final = 1_000_000_000
POLICY: Final = LifecyclePolicy()
WINDOW: Final = POLICY.activation_window_ns
NO_MFA: Final = LifecyclePolicy(require_mfa_for_activation=False)


def ev(
    event_type: str,
    token: str = T,
    at: int = T0,
    *,
    parent: str | None = None,
    mfa: int | None = None,
) -> TokenEvent:
    return TokenEvent(
        event_id=EVENT_ID,
        event_type=event_type,  # type: ignore[arg-type]
        token_id=token,
        occurred_at=format_reading(at, 0),
        schema_version=1,
        payload=TokenPayload(parent_token_id=parent, mfa_at=None if mfa is None else format_reading(mfa, 0)),
    )


def st_(state: str, issued: int = T0, parent: str = "") -> TokenState:
    return TokenState(state, issued, parent=parent)


@dataclass(frozen=True)
class Case:
    name: str
    event: TokenEvent
    verdict: str
    changes: dict[str, TokenState]
    before: dict[str, TokenState] = field(default_factory=dict)
    policy: LifecyclePolicy = POLICY


ACT = T0 + 60 * SECOND  # an activation a minute after issue
CASES: Final = [
    # ISSUED / ORIGIN
    Case("issue", ev("ISSUED"), "ok", {T: st_("ISSUED")}),
    Case("origin backfills an active token", ev("ORIGIN"), "ok", {T: st_("ACTIVE")}),
    Case("issue twice", ev("ISSUED"), "token.reissued", {}, {T: st_("ISSUED")}),
    Case("origin of a known token", ev("ORIGIN"), "token.reissued", {}, {T: st_("REVOKED")}),
    Case("exchange from a live parent", ev("ISSUED", parent=P), "ok", {T: st_("ISSUED", parent=P)}, {P: st_("ACTIVE")}),
    Case(
        "exchange from an unknown parent", ev("ISSUED", parent=P), "token.parent_unknown", {T: st_("ISSUED", parent=P)}
    ),
    Case(
        "exchange from a revoked parent",
        ev("ISSUED", parent=P),
        "token.parent_revoked",
        {T: st_("ISSUED", parent=P)},
        {P: st_("REVOKED")},
    ),
    Case(
        "exchange from an expired parent",
        ev("ISSUED", parent=P),
        "token.parent_expired",
        {T: st_("ISSUED", parent=P)},
        {P: st_("EXPIRED")},
    ),
    Case(
        "exchange from a rotated parent",
        ev("ISSUED", parent=P),
        "token.refresh_after_rotation",
        {T: st_("ISSUED", parent=P)},
        {P: st_("ROTATED")},
    ),
    # steps before issue
    *(
        Case(f"{k} before issue", ev(k), "token.use_without_issue", {})
        for k in ("USED", "ACTIVATED", "EXPIRED", "REVOKED")
    ),
    # steps after the end
    Case("use after revoke", ev("USED"), "token.use_after_revoke", {}, {T: st_("REVOKED")}),
    Case("activate after revoke", ev("ACTIVATED", mfa=T0), "token.use_after_revoke", {}, {T: st_("REVOKED")}),
    Case("use after expiry", ev("USED"), "token.use_after_expiry", {}, {T: st_("EXPIRED")}),
    Case("use after rotation", ev("USED"), "token.use_after_rotation", {}, {T: st_("ROTATED")}),
    Case(
        "refresh into a revoked token",
        ev("REFRESHED", parent=P),
        "token.use_after_revoke",
        {},
        {T: st_("REVOKED", parent=P), P: st_("ACTIVE")},
    ),
    Case(
        "rotate into a live token",
        ev("ROTATED", parent=P),
        "token.reissued",
        {},
        {T: st_("ACTIVE", parent=P), P: st_("ACTIVE")},
    ),
    # children
    Case("refresh without parent", ev("REFRESHED"), "token.orphan_child", {T: st_("ACTIVE")}),
    Case("rotate without parent", ev("ROTATED"), "token.orphan_child", {T: st_("ACTIVE")}),
    Case(
        "refresh of an unknown parent", ev("REFRESHED", parent=P), "token.parent_unknown", {T: st_("ACTIVE", parent=P)}
    ),
    Case(
        "rotation of a revoked parent",
        ev("ROTATED", parent=P),
        "token.parent_revoked",
        {T: st_("ACTIVE", parent=P)},
        {P: st_("REVOKED")},
    ),
    Case(
        "refresh of an expired parent",
        ev("REFRESHED", parent=P),
        "token.parent_expired",
        {T: st_("ACTIVE", parent=P)},
        {P: st_("EXPIRED")},
    ),
    Case(
        "refresh of a rotated parent",
        ev("REFRESHED", parent=P),
        "token.refresh_after_rotation",
        {T: st_("ACTIVE", parent=P)},
        {P: st_("ROTATED")},
    ),
    Case(
        "second rotation of a parent",
        ev("ROTATED", parent=P),
        "token.refresh_after_rotation",
        {T: st_("ACTIVE", parent=P)},
        {P: st_("ROTATED")},
    ),
    Case(
        "refresh of an active parent", ev("REFRESHED", parent=P), "ok", {T: st_("ACTIVE", parent=P)}, {P: st_("ACTIVE")}
    ),
    Case(
        "refresh of an issued parent", ev("REFRESHED", parent=P), "ok", {T: st_("ACTIVE", parent=P)}, {P: st_("ISSUED")}
    ),
    Case(
        "rotation moves the parent to ROTATED",
        ev("ROTATED", at=T0 + 5 * SECOND, parent=P),
        "ok",
        {T: st_("ACTIVE", T0 + 5 * SECOND, P), P: st_("ROTATED", T0 - SECOND)},
        {P: st_("ACTIVE", T0 - SECOND)},
    ),
    # activation
    Case("activate", ev("ACTIVATED", at=ACT, mfa=ACT - SECOND), "ok", {T: st_("ACTIVE")}, {T: st_("ISSUED")}),
    Case("activate twice", ev("ACTIVATED", at=ACT, mfa=ACT), "token.activation_state", {}, {T: st_("ACTIVE")}),
    Case(
        "activate at the end of the window",
        ev("ACTIVATED", at=T0 + WINDOW, mfa=T0 + WINDOW),
        "ok",
        {T: st_("ACTIVE")},
        {T: st_("ISSUED")},
    ),
    Case(
        "activate after the window",
        ev("ACTIVATED", at=T0 + WINDOW + 1, mfa=T0 + WINDOW),
        "token.activation_window",
        {},
        {T: st_("ISSUED")},
    ),
    Case("activate without MFA", ev("ACTIVATED", at=ACT), "token.activation_without_mfa", {}, {T: st_("ISSUED")}),
    Case(
        "MFA after the activation",
        ev("ACTIVATED", at=ACT, mfa=ACT + 1),
        "token.activation_without_mfa",
        {},
        {T: st_("ISSUED")},
    ),
    Case(
        "MFA older than the window",
        ev("ACTIVATED", at=ACT, mfa=ACT - WINDOW - 1),
        "token.activation_without_mfa",
        {},
        {T: st_("ISSUED")},
    ),
    Case(
        "MFA exactly a window old",
        ev("ACTIVATED", at=ACT, mfa=ACT - WINDOW),
        "ok",
        {T: st_("ACTIVE")},
        {T: st_("ISSUED")},
    ),
    Case(
        "MFA not required",
        ev("ACTIVATED", at=ACT),
        "ok",
        {T: st_("ACTIVE")},
        {T: st_("ISSUED")},
        NO_MFA,
    ),
    Case(
        "window still applies without MFA",
        ev("ACTIVATED", at=T0 + WINDOW + 1),
        "token.activation_window",
        {},
        {T: st_("ISSUED")},
        NO_MFA,
    ),
    # use, revoke, expire
    Case("use issued", ev("USED"), "ok", {}, {T: st_("ISSUED")}),
    Case("use active", ev("USED"), "ok", {}, {T: st_("ACTIVE")}),
    Case("revoke active", ev("REVOKED"), "ok", {T: st_("REVOKED")}, {T: st_("ACTIVE")}),
    Case("revoke issued", ev("REVOKED"), "ok", {T: st_("REVOKED")}, {T: st_("ISSUED")}),
    Case("revoke rotated", ev("REVOKED"), "ok", {T: st_("REVOKED")}, {T: st_("ROTATED")}),
    Case("revoke twice", ev("REVOKED"), "ok", {}, {T: st_("REVOKED")}),
    Case("expire active", ev("EXPIRED"), "ok", {T: st_("EXPIRED")}, {T: st_("ACTIVE")}),
    Case("expire revoked", ev("EXPIRED"), "ok", {}, {T: st_("REVOKED")}),
]


class TestTransitions:
    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_case(self, case: Case) -> None:
        def state_of(token: str) -> TokenState:
            return case.before.get(token, NEVER_SEEN)

        verdict, changes = apply(case.event, state_of, case.policy)
        assert verdict == case.verdict
        assert changes == case.changes

    def test_every_rule_is_produced(self) -> None:
        produced = {c.verdict for c in CASES} - {"ok"}
        assert produced == set(RULES)

    def test_rule_ids_are_namespaced(self) -> None:
        assert all(rule.startswith("token.") and RULES[rule] for rule in RULES)
        assert "ok" not in RULES


class Live:
    """Applies events as the ledger does, remembering every token's state and every recorded verdict."""

    def __init__(self, policy: LifecyclePolicy = POLICY) -> None:
        self.policy = policy
        self.states: dict[str, TokenState] = {}
        self.log: list[tuple[TokenEvent, str]] = []

    def state_of(self, token: str) -> TokenState:
        return self.states.get(token, NEVER_SEEN)

    def record(self, event: TokenEvent) -> str:
        verdict, changes = apply(event, self.state_of, self.policy)
        self.states.update(changes)
        self.log.append((event, verdict))
        return verdict

    def history(self, token: str) -> Iterable[tuple[TokenEvent, str]]:
        """The token's own events and its children's, in log order, as the ledger stores them."""
        return [(e, v) for e, v in self.log if token in (e.token_id, e.payload.parent_token_id)]


class TestHappyPath:
    def test_issue_activate_use_refresh_rotate_revoke(self) -> None:
        a, b, c = "1" * 64, "2" * 64, "eu-west-1:" + "3" * 64
        live = Live()
        steps = [
            ev("ISSUED", a, T0),
            ev("ACTIVATED", a, T0 + 60 * SECOND, mfa=T0 + 30 * SECOND),
            ev("USED", a, T0 + 90 * SECOND),
            ev("REFRESHED", b, T0 + 120 * SECOND, parent=a),
            ev("USED", b, T0 + 121 * SECOND),
            ev("ROTATED", c, T0 + 180 * SECOND, parent=b),
            ev("USED", c, T0 + 181 * SECOND),
            ev("REVOKED", c, T0 + 240 * SECOND),
        ]
        assert [live.record(e) for e in steps] == ["ok"] * len(steps)
        assert live.states == {
            a: TokenState("ACTIVE", T0),
            b: TokenState("ROTATED", T0 + 120 * SECOND, parent=a),
            c: TokenState("REVOKED", T0 + 180 * SECOND, parent=b),
        }
        # what the rules then say about the ended tokens
        assert live.record(ev("USED", b, T0 + 300 * SECOND)) == "token.use_after_rotation"
        assert live.record(ev("REFRESHED", "4" * 64, T0 + 301 * SECOND, parent=b)) == "token.refresh_after_rotation"
        assert live.record(ev("USED", c, T0 + 302 * SECOND)) == "token.use_after_revoke"
        assert live.record(ev("ROTATED", "5" * 64, T0 + 303 * SECOND, parent=c)) == "token.parent_revoked"
        for token in (a, b, c, "4" * 64, "5" * 64):
            assert replay(token, live.history(token), POLICY) == live.state_of(token)


TOKENS: Final = ("a" * 64, "b" * 64, "r1:" + "c" * 64, "d" * 64, "e" * 64, "f" * 64)
# Weighted towards the steps that create tokens and move parents, so rotations and their parents are common.
STEP_TYPES: Final = (*TOKEN_EVENT_TYPES, "ISSUED", "ISSUED", "ROTATED", "ROTATED", "REFRESHED")
SMALL_WINDOW: Final = 100


@st.composite
def histories(draw: st.DrawFn) -> tuple[LifecyclePolicy, list[TokenEvent]]:
    policy = LifecyclePolicy(activation_window_ns=SMALL_WINDOW, require_mfa_for_activation=draw(st.booleans()))
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(STEP_TYPES),
                st.sampled_from(TOKENS),
                st.sampled_from((None, *TOKENS)),
                st.sampled_from([0, 1, SMALL_WINDOW // 2, SMALL_WINDOW, SMALL_WINDOW + 1]),
                st.none() | st.sampled_from([-1, 0, 1, SMALL_WINDOW, SMALL_WINDOW + 1]),
            ),
            max_size=40,
        )
    )
    now = T0
    events = []
    for event_type, token, parent, dt, mfa_age in steps:
        now += dt
        mfa = None if mfa_age is None else now - mfa_age
        events.append(ev(event_type, token, now, parent=parent, mfa=mfa))
    return policy, events


class TestReplay:
    @given(histories())
    def test_replay_matches_live(self, history: tuple[LifecyclePolicy, list[TokenEvent]]) -> None:
        policy, events = history
        live = Live(policy)
        for event in events:
            verdict = live.record(event)
            assert verdict == "ok" or verdict in RULES
        for token in TOKENS:
            assert replay(token, live.history(token), policy) == live.state_of(token)

    def test_replay_of_nothing(self) -> None:
        assert replay(T, [], POLICY) == NEVER_SEEN

    def test_rejected_rotation_does_not_move_the_parent(self) -> None:
        # A child's ROTATED moves the parent only when its recorded verdict was "ok".
        child = "c" * 64
        rows = [(ev("ISSUED", T), "ok"), (ev("ROTATED", child, parent=T), "token.reissued")]
        assert replay(T, rows, POLICY) == TokenState("ISSUED", T0)
        rows[1] = (rows[1][0], "ok")
        assert replay(T, rows, POLICY) == TokenState("ROTATED", T0)

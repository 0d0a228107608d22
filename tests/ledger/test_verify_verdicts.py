"""verify judges every token event again: a sequencer that lies about verdicts is caught, under the
lifecycle policy the ledger recorded when it was created."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path

import pytest

from lineage_ledger.core import lifecycle
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.lifecycle import LifecyclePolicy, TokenState
from lineage_ledger.core.model import TokenEvent
from lineage_ledger.errors import InputError
from lineage_ledger.ledger import sequence as sequence_module
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import open_store
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    make_log_signer,
    make_producer_signer,
    token_event,
    token_id,
)

S = 1_000_000_000
T0 = 1_763_000_000_000_000_000


def _append(ledger: Ledger, events: list[bytes]) -> list[str]:
    result = ledger.append(seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer()))
    return [r.verdict for r in result.receipts]


def _ledger(path: Path, settings: LedgerSettings | None = None) -> Ledger:
    ledger = Ledger.create(str(path), make_log_signer(), settings=settings)
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    return ledger


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sequencer_that_records_ok_for_a_use_after_revoke_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    tok, other = token_id("verdict-victim"), token_id("verdict-bystander")
    honest = [
        token_event("ISSUED", tok, T0, user_id="alice"),
        token_event("ISSUED", other, T0 + 1, user_id="bob"),
        token_event("REVOKED", tok, T0 + S, reason="stolen"),
    ]
    forged = token_event("USED", tok, T0 + 2 * S, resource="/v1/payroll", outcome="ALLOW")  # after REVOKED
    later = token_event("USED", other, T0 + 3 * S, resource="/v1/cart", outcome="ALLOW")

    def lying_apply(
        event: TokenEvent,
        state_of: Callable[[str], TokenState],
        policy: LifecyclePolicy,
        local: Callable[[str], bool] | None = None,
    ) -> tuple[str, dict[str, TokenState]]:
        _, changes = lifecycle.apply(event, state_of, policy, local)
        return "ok", changes  # whatever the rules say, record "ok"

    path = tmp_path / "lied.db"
    ledger = _ledger(path)
    assert _append(ledger, honest) == ["ok", "ok", "ok"]
    with monkeypatch.context() as patch:
        patch.setattr(
            sequence_module, "lifecycle", types.SimpleNamespace(apply=lying_apply, NEVER_SEEN=lifecycle.NEVER_SEEN)
        )
        assert _append(ledger, [forged]) == ["ok"]  # the lie: signed, chained and checkpointed like the truth
    assert _append(ledger, [later]) == ["ok"]
    ledger.seal()
    ledger.close()

    report = verify_ledger(str(path), workers=workers)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["verdict"]
    assert report.first_bad_index == 4  # key entry 0, honest events 1 to 3, then the forged one
    assert "records verdict 'ok'" in report.problems[0].message
    assert "token.use_after_revoke" in report.problems[0].message
    assert report.verdicts == 5


def test_an_honest_ledger_is_judged_alike(tmp_path: Path) -> None:
    tok = token_id("honest")
    path = tmp_path / "honest.db"
    ledger = _ledger(path)
    verdicts = _append(
        ledger,
        [
            token_event("ISSUED", tok, T0),
            token_event("REVOKED", tok, T0 + S),
            token_event("USED", tok, T0 + 2 * S, resource="/x", outcome="ALLOW"),
            token_event("ISSUED", tok, T0 + 3 * S),
        ],
    )
    assert verdicts[:2] == ["ok", "ok"]
    assert "ok" not in verdicts[2:]
    ledger.seal()
    ledger.close()
    report = verify_ledger(str(path))
    assert report.ok, report.problems
    assert report.verdicts == 4


def test_the_lifecycle_policy_is_fixed_at_creation_and_verify_uses_it(tmp_path: Path) -> None:
    relaxed = LedgerSettings(lifecycle=LifecyclePolicy(require_mfa_for_activation=False))
    path = tmp_path / "relaxed.db"
    first, second = token_id("relaxed-1"), token_id("relaxed-2")
    ledger = _ledger(path, relaxed)
    assert _append(ledger, [token_event("ISSUED", first, T0), token_event("ACTIVATED", first, T0 + 1)]) == [
        "ok",
        "ok",
    ]  # no MFA time, and this ledger does not require one
    ledger.close()
    # reopened with the default settings (which require MFA): the recorded policy still decides
    ledger = Ledger.open(str(path), make_log_signer())
    assert ledger.settings.lifecycle == relaxed.lifecycle
    assert _append(ledger, [token_event("ISSUED", second, T0 + S), token_event("ACTIVATED", second, T0 + S + 1)]) == [
        "ok",
        "ok",
    ]
    ledger.seal()
    ledger.close()
    store = open_store(str(path), readonly=True)
    assert LifecyclePolicy.from_text(store.meta()["lifecycle"]) == relaxed.lifecycle
    store.close()
    assert verify_ledger(str(path)).ok  # judged under the recorded policy, not the default


def test_a_malformed_policy_text_is_refused() -> None:
    assert LifecyclePolicy.from_text(LifecyclePolicy().to_text()) == LifecyclePolicy()
    for text in ('{"activation_window_ns":-1,"require_mfa_for_activation":true}', "[]", '{"x":1}'):
        with pytest.raises(InputError, match="lifecycle"):
            LifecyclePolicy.from_text(text)

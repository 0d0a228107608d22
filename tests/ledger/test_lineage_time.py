"""Lineage answers at an instant: times as people write them, a token's own expiry, and revocation cascade.

Each test records events at chosen wall-clock instants (2026-12-01, computed with the standard library's
calendar) and asks what a responder would ask.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.lifecycle import LifecyclePolicy
from lineage_ledger.errors import InputError
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from tests.conftest import token_id
from tests.ledger.test_lineage import T0, Book

S = 10**9
NINE = calendar.timegm((2026, 12, 1, 9, 0, 0, 0, 0, 0))
"""2026-12-01T09:00:00Z in epoch seconds."""


def off(hour: int, minute: int = 0) -> int:
    """Book's seconds-after-T0 for 2026-12-01 at hour:minute UTC."""
    return NINE + (hour - 9) * 3600 + minute * 60 - T0 // S


def ns(hour: int, minute: int = 0) -> int:
    """2026-12-01 at hour:minute UTC in ns."""
    return (NINE + (hour - 9) * 3600 + minute * 60) * S


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    b = Book(tmp_path / "time.db")
    yield b
    b.close()


def test_rfc3339_dates_and_epoch_seconds_are_read_as_times(book: Book) -> None:
    t = token_id("time-rfc")
    book.token("ISSUED", t, off(9))
    book.token("USED", t, off(9, 20), resource="/a", outcome="ALLOW")
    book.token("REVOKED", t, off(10))
    lin = book.lineage
    assert lin.state_at(t, "2026-12-01T09:30:00Z").state == "ISSUED"
    assert lin.state_at(t, "2026-12-01T10:30:00+01:00").state == "ISSUED"
    assert lin.state_at(t, "2026-12-01T10:00:00Z").state == "REVOKED"
    assert lin.state_at(t, str(NINE + 1800)).state == "ISSUED"  # epoch seconds
    assert lin.state_at(t, f"{(NINE + 1800) * 1000}ms").state == "ISSUED"
    assert lin.state_at(t, "2026-12-01").state == "NONE"  # midnight, before the issue
    assert lin.state_at(t, "2026-12-02").state == "REVOKED"
    assert lin.blast_radius(t, "2026-12-01T09:00:00Z").resources == ["/a"]
    assert lin.blast_radius(t, "2026-12-01T09:00:00Z", "2026-12-01T09:20:00Z").resources == []
    assert [r.event.occurred_at for r in lin.tokens_for_resource("/a", "2026-12-01")] == [format_reading(ns(9, 20), 0)]


@pytest.mark.parametrize("bad", ["abc", "2026-12-01T09:30:00", "yesterday", "1.5"])
def test_a_value_that_is_not_a_time_is_refused_naming_the_argument(book: Book, bad: str) -> None:
    t = token_id("time-bad")
    book.token("ISSUED", t, off(9))
    lin = book.lineage
    with pytest.raises(InputError) as e:
        lin.state_at(t, bad)
    assert e.value.field == "at"
    with pytest.raises(InputError) as e:
        lin.blast_radius(t, start=bad)
    assert e.value.field == "start"
    with pytest.raises(InputError) as e:
        lin.tokens_for_resource("/a", end=bad)
    assert e.value.field == "end"
    with pytest.raises(InputError) as e:
        lin.policy_in_force(bad)
    assert e.value.field == "at"


def test_state_at_honours_the_tokens_own_expiry(book: Book) -> None:
    t = token_id("time-expiring")
    book.token("ISSUED", t, off(9), expires_at=format_reading(ns(9, 45), 0))
    lin = book.lineage
    assert lin.state_at(t, ns(9, 44)).state == "ISSUED"
    assert lin.state_at(t, ns(9, 45)).state == "EXPIRED"  # expires_at is the first instant it is not valid
    assert lin.state_at(t, ns(13)).state == "EXPIRED"


def test_user_policies_leave_out_a_token_that_had_expired(book: Book) -> None:
    t, live = token_id("time-user-expired"), token_id("time-user-live")
    book.token("ISSUED", t, off(9), user_id="dana", expires_at=format_reading(ns(9, 30), 0))
    book.token("ISSUED", live, off(9, 10), user_id="dana")
    book.policy("api", "v2", off(10), {"allow": ["read"]})
    changes = book.lineage.policy_changes_for_user("dana")
    assert [(c["policy"]["version"], c["tokens"]) for c in changes] == [("v2", [live])]


def _family(book: Book) -> tuple[str, str, str, str]:
    """R issued 09:00; C refreshed from R 09:10; G rotated from C 09:20; X exchanged from G 09:25;
    R revoked 10:00."""
    r, c, g, x = (token_id(f"time-cascade-{n}") for n in "RCGX")
    book.token("ISSUED", r, off(9), user_id="dana")
    book.token("REFRESHED", c, off(9, 10), parent_token_id=r)
    book.token("ROTATED", g, off(9, 20), parent_token_id=c)
    book.token("ISSUED", x, off(9, 25), parent_token_id=g)
    book.token("REVOKED", r, off(10))
    return r, c, g, x


def test_revoking_a_token_ends_every_token_derived_from_it(book: Book) -> None:
    r, c, g, x = _family(book)
    lin = book.lineage
    assert [lin.state_at(t, ns(9, 59)).state for t in (r, c, g, x)] == ["ISSUED", "ROTATED", "ACTIVE", "ISSUED"]
    assert lin.status_at(g, ns(10)) == (lin.state_at(g, ns(10)), r)
    assert [lin.state_at(t, ns(10)).state for t in (r, c, g, x)] == ["REVOKED", "ROTATED", "REVOKED", "REVOKED"]
    assert lin.status_at(x, ns(10))[1] == r


def test_introspection_follows_the_cascade(book: Book) -> None:
    r, _, g, x = _family(book)
    ledger = book.ledger
    assert not ledger.is_active(r, ns(10, 1))
    assert not ledger.is_active(g, ns(10, 1))
    assert not ledger.is_active(x, ns(10, 1))
    assert ledger.token_state(g).state == "ACTIVE"  # its own state is unchanged: the cascade is read-time


def test_the_cascade_can_be_turned_off_and_the_choice_is_recorded(tmp_path: Path) -> None:
    policy = LifecyclePolicy(revocation_cascade=False)
    assert LifecyclePolicy.from_text(policy.to_text()) == policy
    b = Book(tmp_path / "no-cascade.db")
    b.ledger.close()
    settings = LedgerSettings(block_size=100_000, block_seconds=1e9, lifecycle=policy)
    path = tmp_path / "off.db"
    b.ledger = Ledger.create(str(path), b.log, settings=settings, clock=b.clock)
    b.path = path
    for p, s in b.signers.items():
        b.ledger.register_key(p, f"{p}-1", s.public_key)
    try:
        g = _family(b)[2]
        assert Lineage(b.ledger.store).state_at(g, ns(10)).state == "ACTIVE"  # the recorded policy is read
        assert b.ledger.is_active(g, ns(10, 1))
        b.ledger.seal()
        verifier = b.ledger.log_verifier()
    finally:
        b.close()
    assert verify_ledger(b.url, verifier=verifier).ok


def test_a_default_policy_reads_as_before_the_cascade_setting_existed() -> None:
    # the text a ledger created before the setting recorded: it must read back, and cascade
    old = '{"activation_window_ns":900000000000,"require_mfa_for_activation":true}'
    assert LifecyclePolicy().to_text() == old
    assert LifecyclePolicy.from_text(old).revocation_cascade is True
    with pytest.raises(InputError):
        LifecyclePolicy.from_text(old[:-1] + ',"revocation_cascade":"no"}')


def test_verdicts_do_not_change_so_the_ledger_verifies(book: Book) -> None:
    g = _family(book)[2]
    used = book.token("USED", g, off(10, 30), resource="/after", outcome="ALLOW")
    assert [rec.verdict for rec in book.lineage.timeline(g) if rec.index == used] == ["ok"]
    book.ledger.seal()
    verifier = book.ledger.log_verifier()
    book.close()
    assert verify_ledger(book.url, verifier=verifier).ok

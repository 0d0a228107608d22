"""Time arguments of ``lineage query`` as a responder types them, and times shown back as RFC 3339 UTC.

A token issued at 09:00 and revoked at 10:00 on 2026-12-01 (instants computed with the standard library's
calendar), its refresh child, and a token that expired by its own ``expires_at``.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_ledger.core.hlc import format_reading
from tests.cli.test_query_cli import Run, run
from tests.conftest import token_id
from tests.ledger.test_lineage import T0, Book

S = 10**9
NINE = calendar.timegm((2026, 12, 1, 9, 0, 0, 0, 0, 0))


def off(minutes: int) -> int:
    """Book's seconds-after-T0 for ``minutes`` after 2026-12-01T09:00:00Z."""
    return NINE + minutes * 60 - T0 // S


@dataclass(frozen=True)
class Built:
    path: Path
    token: str
    child: str
    expiring: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("time-cli") / "ledger.db"
    book = Book(path)
    t, c, e = token_id("time-cli-T"), token_id("time-cli-C"), token_id("time-cli-E")
    book.token("ISSUED", t, off(0), user_id="dana")
    book.token("USED", t, off(5), resource="/v1/orders", outcome="ALLOW")
    book.token("REFRESHED", c, off(10), parent_token_id=t)
    book.token("USED", c, off(15), resource="/v1/billing", outcome="ALLOW")
    book.token("REVOKED", t, off(60))
    book.token("ISSUED", e, off(0), user_id="erin", expires_at=format_reading((NINE + 45 * 60) * S, 0))
    book.close()
    return Built(path, t, c, e)


def ask(capsys: pytest.CaptureFixture[str], built: Built, *argv: str, json: bool = True) -> Run:
    """``lineage query ...``; a usage error (argparse exits, as the ``lineage`` script would) is its code."""
    try:
        return run(capsys, "query", *argv, "--ledger", str(built.path), *(["--json"] if json else []))
    except SystemExit as e:
        captured = capsys.readouterr()
        return Run(int(str(e.code)), captured.out, captured.err)


def state(capsys: pytest.CaptureFixture[str], built: Built, token: str, at: str) -> str:
    result = ask(capsys, built, "state-at", token, "--at", at)
    assert result.code == 0, result.err
    answer: str = result.json()["answer"]["state"]
    return answer


def test_state_at_an_rfc3339_time_between_issue_and_revocation(
    capsys: pytest.CaptureFixture[str], built: Built
) -> None:
    assert state(capsys, built, built.token, "2026-12-01T09:30:00Z") == "ISSUED"
    assert state(capsys, built, built.token, "2026-12-01T10:00:00Z") == "REVOKED"
    assert state(capsys, built, built.token, "2026-12-01T10:30:00+01:00") == "ISSUED"


@pytest.mark.parametrize("at", [str(NINE + 1800), f"{NINE + 1800}s", f"{(NINE + 1800) * 1000}ms"])
def test_state_at_epoch_seconds_and_milliseconds(capsys: pytest.CaptureFixture[str], built: Built, at: str) -> None:
    assert state(capsys, built, built.token, at) == "ISSUED"


@pytest.mark.parametrize("at", ["abc", "2026-12-01T09:30:00", "tomorrow", "1.5"])
def test_a_time_that_is_not_one_is_a_usage_error(capsys: pytest.CaptureFixture[str], built: Built, at: str) -> None:
    result = ask(capsys, built, "state-at", built.token, "--at", at)
    assert result.code == 2
    assert "--at" in result.err
    assert result.out == ""


def test_window_options_are_times_too(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    result = ask(capsys, built, "blast-radius", built.token, "--start", "2026-12-01T09:00:00Z")
    assert result.code == 0, result.err
    assert result.json()["answer"]["resources"] == ["/v1/orders", "/v1/billing"]
    result = ask(capsys, built, "blast-radius", built.token, "--start", "2026-12-01T09:06:00Z", "--end", "2026-12-02")
    assert result.json()["answer"]["resources"] == ["/v1/billing"]
    result = ask(capsys, built, "resource", "/v1/orders", "--end", "2026-12-01T09:05:00Z")
    assert result.json()["answer"]["tokens"] == []
    result = ask(capsys, built, "blast-radius", built.token, "--end", "noon")
    assert (result.code, "--end" in result.err) == (2, True)


def test_state_at_honours_expiry(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    assert state(capsys, built, built.expiring, "2026-12-01T09:44:59Z") == "ISSUED"
    assert state(capsys, built, built.expiring, "2026-12-01T13:00:00Z") == "EXPIRED"


def test_state_at_follows_the_revocation_cascade(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    before = ask(capsys, built, "state-at", built.child, "--at", "2026-12-01T09:59:00Z").json()["answer"]
    after = ask(capsys, built, "state-at", built.child, "--at", "2026-12-01T10:00:00Z").json()["answer"]
    assert (before["state"], before["revoked_by"]) == ("ACTIVE", None)
    assert (after["state"], after["revoked_by"]) == ("REVOKED", built.token)
    human = ask(capsys, built, "state-at", built.child, "--at", "2026-12-01T10:00:00Z", json=False)
    assert f"ancestor {built.token} was revoked" in human.out


def test_people_see_rfc3339_utc(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    human = ask(capsys, built, "state-at", built.token, "--at", str(NINE + 1800), json=False)
    assert human.code == 0, human.err
    assert "2026-12-01T09:30:00Z: ISSUED" in human.out
    timeline = ask(capsys, built, "timeline", built.token, json=False)
    assert "2026-12-01T09:05:00Z" in timeline.out
    as_json = ask(capsys, built, "state-at", built.token, "--at", "2026-12-01T09:30:00Z").json()["answer"]
    assert as_json["at"] == format_reading((NINE + 1800) * S, 0)  # nanoseconds, as the ledger's readings


def _lineage(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    try:
        return run(capsys, *argv)
    except SystemExit as e:
        captured = capsys.readouterr()
        return Run(int(str(e.code)), captured.out, captured.err)


def test_key_windows_take_the_same_times(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ledger = str(tmp_path / "keys.db")
    assert _lineage(capsys, "init", "--ledger", ledger).code == 0
    register = ("keys", "register", "--ledger", ledger, "--producer", "svc-t", "--key-id", "svc-t-1")
    done = _lineage(capsys, *register, "--generate", str(tmp_path / "t.key"), "--valid-from", "2026-12-01T09:00:00Z")
    assert done.code == 0, done.err
    listed = _lineage(capsys, "keys", "list", "--ledger", ledger, "--json")
    (key,) = [k for k in listed.json() if k["key_id"] == "svc-t-1"]
    assert key["valid_from"] == format_reading(NINE * S, 0)
    revoked = _lineage(capsys, "keys", "revoke", "--ledger", ledger, "--key-id", "svc-t-1", "--at", "2026-12-02")
    assert revoked.code == 0, revoked.err
    (key,) = [
        k for k in _lineage(capsys, "keys", "list", "--ledger", ledger, "--json").json() if k["key_id"] == "svc-t-1"
    ]
    assert key["revoked_at"] == format_reading((NINE + 15 * 3600) * S, 0)  # midnight UTC, 2026-12-02
    bad = _lineage(capsys, *register[:-1], "svc-t-2", "--generate", str(tmp_path / "u.key"), "--valid-from", "soon")
    assert bad.code == 2
    assert "--valid-from" in bad.err


def test_trace_shows_times_as_rfc3339(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    traced = _lineage(capsys, "trace", built.token, "--ledger", str(built.path))
    assert traced.code == 0, traced.err
    assert "2026-12-01T09:00:00Z" in traced.out
    assert "2026-12-01T10:00:00Z" in traced.out

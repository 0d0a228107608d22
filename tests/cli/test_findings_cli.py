"""``lineage findings scan`` as a responder reads it: a summary first, medium and above by default, and a
backfill mode for imported history, whose events were all recorded long after they occurred."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_query_cli import run
from tests.conftest import token_id
from tests.ledger.test_lineage import Book

DAY = 86_400


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten events that occurred in one minute, recorded three days later (an import of old history), and
    one use after revocation (critical)."""
    path = tmp_path_factory.mktemp("findings-cli") / "ledger.db"
    book = Book(path)
    t = token_id("findings-backfill")
    book.token("ISSUED", t, 0, recorded=3 * DAY)
    for n in range(1, 8):
        book.token("USED", t, n, recorded=3 * DAY + n, resource=f"/r/{n}", outcome="ALLOW")
    book.token("REVOKED", t, 8, recorded=3 * DAY + 8)
    book.token("USED", t, 9, recorded=3 * DAY + 9, resource="/late", outcome="ALLOW")
    book.close()
    return path


def test_low_findings_are_counted_but_not_listed_by_default(capsys: pytest.CaptureFixture[str], imported: Path) -> None:
    got = run(capsys, "findings", "scan", "--ledger", str(imported), "--json").json()
    assert [f["rule"] for f in got["findings"]] == ["token.use_after_revoke"]
    assert (got["min_severity"], got["below_min_severity"]) == ("medium", 10)  # one time.skew per event
    everything = run(capsys, "findings", "scan", "--ledger", str(imported), "--json", "--min-severity", "low").json()
    assert [f["rule"] for f in everything["findings"]].count("time.skew") == 10


def test_the_summary_comes_first_and_suggests_backfill(capsys: pytest.CaptureFixture[str], imported: Path) -> None:
    human = run(capsys, "findings", "scan", "--ledger", str(imported))
    assert human.code == 0, human.err
    lines = human.out.splitlines()
    assert lines[0] == "scanned 12 entries: 1 critical (at or above medium)"
    assert "10 more below medium not shown" in human.out
    assert "--backfill" in human.out


def test_backfill_does_not_flag_history_as_clock_skew(capsys: pytest.CaptureFixture[str], imported: Path) -> None:
    got = run(
        capsys, "findings", "scan", "--ledger", str(imported), "--json", "--min-severity", "low", "--backfill"
    ).json()
    assert [f["rule"] for f in got["findings"]] == ["token.use_after_revoke"]
    assert got["below_min_severity"] == 0
    human = run(capsys, "findings", "scan", "--ledger", str(imported), "--backfill")
    assert "--backfill" not in human.out

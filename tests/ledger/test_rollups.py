"""Daily rollups per token: written for complete days, read by token (and day), recomputed by verify.

The ledger's clock is set by the test, so the days entries are recorded on are known: token A is issued and
used on day 1 and used again on day 2; token B is used on day 2; day 3 holds only the seal that completes
day 2, so days 1 and 2 are rolled up and day 3 is not.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.ledger.rollups import roll_up, token_rollups
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import open_store
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_log_signer, make_producer_signer, token_event, token_id

DAY = 86_400 * 1_000_000_000
DAY1 = 20_400 * DAY  # 2025-11-08
A, B = token_id("rollup-a"), token_id("rollup-b")


def _at(day: int, hour: int) -> int:
    return DAY1 + (day - 1) * DAY + hour * 3_600_000_000_000


EVENTS = [  # (day the ledger records it, event)
    (1, token_event("ISSUED", A, _at(1, 1), user_id="u", scopes=("read",))),
    (1, token_event("USED", A, _at(1, 2), resource="/orders", outcome="ALLOW")),
    (1, token_event("USED", A, _at(1, 3), resource="/admin", outcome="DENY")),
    (1, token_event("USED", A, _at(1, 4), resource="/orders", outcome="ALLOW")),
    (2, token_event("ISSUED", B, _at(2, 1), user_id="v", scopes=("read",))),
    (2, token_event("USED", A, _at(2, 2), resource="/orders", outcome="ALLOW")),
    (2, token_event("USED", B, _at(2, 3), resource="/reports", outcome="ALLOW")),
]


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    now = [_at(1, 0)]
    producer = make_producer_signer()
    with Ledger.create(str(path), make_log_signer(), settings=LedgerSettings(block_seconds=1e9), clock=lambda: now[0]):
        pass
    with Ledger.open(str(path), make_log_signer(), clock=lambda: now[0]) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, producer.public_key)
        for day, event in EVENTS:
            now[0] = max(now[0], _at(day, 12))
            ledger.append(seal_batch([event], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=producer))
        now[0] = _at(3, 12)
        ledger.seal()
    return path


def _key(path: Path) -> str:
    store = open_store(str(path), readonly=True)
    try:
        return str(store.meta()["verifier_key"])
    finally:
        store.close()


def test_complete_days_are_rolled_up_once(ledger_path: Path) -> None:
    store = open_store(str(ledger_path))
    try:
        days = roll_up(store)
        assert [d.day for d in days] == ["2025-11-08", "2025-11-09"]
        assert days[0].first == 0
        assert days[1].first == days[0].end
        assert roll_up(store) == []  # nothing new is complete
        a = token_rollups(store, "token:" + A)
        b = token_rollups(store, "token:" + B, "2025-11-09")
    finally:
        store.close()
    first, second = a
    assert (first["day"], first["events"], first["uses"], first["stored"]) == ("2025-11-08", 4, 3, True)
    assert first["resources"] == ["/admin", "/orders"]
    assert first["outcomes"] == {"ALLOW": 2, "DENY": 1}
    assert first["first_at"].startswith(str(_at(1, 1)))
    assert first["last_at"].startswith(str(_at(1, 4)))
    assert (second["day"], second["events"], second["uses"], second["resources"]) == ("2025-11-09", 1, 1, ["/orders"])
    assert [(r["day"], r["events"], r["uses"], r["outcomes"]) for r in b] == [("2025-11-09", 2, 1, {"ALLOW": 1})]
    report = verify_ledger(str(ledger_path), workers=1)
    assert report.ok, report.problems


def test_a_day_not_yet_rolled_up_is_answered_from_the_entries(ledger_path: Path) -> None:
    store = open_store(str(ledger_path), readonly=True)
    try:
        rows = token_rollups(store, "token:" + A)
    finally:
        store.close()
    assert [(r["day"], r["uses"], r["stored"]) for r in rows] == [("2025-11-08", 3, False), ("2025-11-09", 1, False)]


CHANGES = {
    "a use added": "UPDATE rollups SET uses = uses + 1 WHERE day = '2025-11-08'",
    "a resource removed": "UPDATE rollups SET resources = '[\"/orders\"]' WHERE day = '2025-11-08'",
    "an outcome changed": "UPDATE rollups SET outcomes = '{\"ALLOW\":3}' WHERE day = '2025-11-08'",
    "a row removed": "DELETE FROM rollups WHERE day = '2025-11-09' AND subject LIKE 'token:%' AND uses = 1 "
    "AND resources = '[\"/reports\"]'",
    "a row slipped into a day not rolled up": "INSERT INTO rollups SELECT '2025-11-10', subject, events, uses, "
    "first_at, last_at, first_idx, last_idx, resources, outcomes FROM rollups WHERE day = '2025-11-09' LIMIT 1",
    "a day's range moved": "UPDATE rollup_days SET end_idx = end_idx - 1 WHERE day = '2025-11-08'",
    "an earlier day dropped": "DELETE FROM rollup_days WHERE day = '2025-11-08'",
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_a_changed_rollup_fails_verify(ledger_path: Path, tmp_path: Path, what: str) -> None:
    store = open_store(str(ledger_path))
    try:
        roll_up(store)
    finally:
        store.close()
    copy = tmp_path / "copy.db"
    shutil.copyfile(ledger_path, copy)
    with closing(sqlite3.connect(copy)) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        assert db.execute(CHANGES[what]).rowcount == 1
        db.commit()
    report = verify_ledger(str(copy), workers=1)
    assert not report.ok, what
    assert {p.kind for p in report.problems} == {"rollups"}, report.problems


def test_the_cli_rolls_up_and_answers(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(ledger_path)
    assert main(["query", "rollup", A, "--ledger", url, "--json"]) == 0
    assert [r["stored"] for r in json.loads(capsys.readouterr().out)["answer"]] == [False, False]
    assert main(["rollup", "--ledger", url, "--json"]) == 0
    assert [d["day"] for d in json.loads(capsys.readouterr().out)["days"]] == ["2025-11-08", "2025-11-09"]
    assert main(["query", "rollup", A, "--day", "2025-11-09", "--ledger", url, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["answer"]
    assert (row["day"], row["uses"], row["stored"]) == ("2025-11-09", 1, True)
    with pytest.raises(SystemExit) as usage:
        main(["query", "rollup", A, "--day", "yesterday", "--ledger", url])
    assert usage.value.code == 2
    assert "not a day (YYYY-MM-DD): 'yesterday'" in capsys.readouterr().err
    assert main(["verify", "--ledger", url, "--key", _key(ledger_path)]) == 0

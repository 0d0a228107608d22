"""No module of the package is longer than MAX_LINES unless this file says why it has to be.

A long module is a sign that it holds more than one thing: split it along its seams. The few that stay long
on purpose are listed in ALLOWED, each with its reason, and must still be long (a stale entry is an error
too, so the list stays short and true).
"""

from __future__ import annotations

from pathlib import Path

import lineage_ledger

PACKAGE = Path(lineage_ledger.__file__).parent
MAX_LINES = 500

ALLOWED: dict[str, str] = {
    "offline.py": "the offline verifier an auditor copies beside an evidence bundle: one file, standard library "
    "and cryptography only, importing nothing else of the package",
    "store/sqlite.py": "one backend per module, the store contract in one place",
    "store/postgres.py": "one backend per module, the store contract in one place",
    "ledger/writer.py": "Ledger, the single sequencer: its public API and every change of the log's in-memory "
    "state, adopted after each commit, stay in one class; the stages it drives are ledger.check, sequence, "
    "integrate and publish",
    "emitter/sender.py": "the Emitter: emit() and the spooler thread share one queue, one lock order and one "
    "set of counters, kept in one class so the locking reads in one place; delivery is emitter.delivery",
}


def line_counts() -> dict[str, int]:
    """Lines of every module of the package, by path relative to the package."""
    return {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def too_long(counts: dict[str, int], allowed: dict[str, str], limit: int) -> list[str]:
    """The modules over ``limit`` lines that ``allowed`` gives no reason for, and the allowed ones that are
    no longer over it (or no longer exist)."""
    over = [f"{name}: {lines} lines" for name, lines in counts.items() if lines > limit and name not in allowed]
    stale = [f"{name}: allowed but {counts.get(name, 0)} lines" for name in allowed if counts.get(name, 0) <= limit]
    return over + stale


def test_no_module_is_longer_than_the_limit_without_a_reason() -> None:
    counts = line_counts()
    assert "ledger/writer.py" in counts
    problems = too_long(counts, ALLOWED, MAX_LINES)
    assert problems == [], f"over {MAX_LINES} lines with no reason in ALLOWED (split it): " + "; ".join(problems)


def test_every_allowed_module_has_a_reason() -> None:
    assert all(len(reason.split()) >= 5 for reason in ALLOWED.values())


def test_the_check_finds_a_long_module_and_a_stale_allowance() -> None:
    counts = {"a.py": 501, "b.py": 500, "c.py": 900}
    assert too_long(counts, {"c.py": "a stated reason"}, 500) == ["a.py: 501 lines"]
    assert too_long(counts, {"b.py": "no longer long"}, 500) == [
        "a.py: 501 lines",
        "c.py: 900 lines",
        "b.py: allowed but 500 lines",
    ]

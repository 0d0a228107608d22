"""The ledger and the pure core never read the wall clock themselves: time comes in as an argument or as an
injected clock (a function passed in, ``time.time_ns`` by default), so every answer can be reproduced."""

from __future__ import annotations

import ast
from pathlib import Path

import lineage_ledger

PACKAGE = Path(lineage_ledger.__file__).parent
CLOCKS = {"time", "time_ns", "monotonic", "monotonic_ns", "now", "utcnow", "today"}
CLOCK_MODULES = {"time", "datetime", "date"}


def clock_reads(source: str) -> list[int]:
    """Lines that call a clock (``time.time_ns()``, ``datetime.now()`` ...); passing ``time.time_ns`` along
    as a default clock is not a read."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCKS:
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in CLOCK_MODULES:
                lines.append(node.lineno)
    return lines


def test_the_ledger_and_the_core_take_time_as_an_argument() -> None:
    found = {
        str(path.relative_to(PACKAGE)): clock_reads(path.read_text(encoding="utf-8"))
        for folder in ("core", "ledger")
        for path in sorted((PACKAGE / folder).glob("*.py"))
    }
    assert "ledger/writer.py" in found
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_a_clock_read_is_found() -> None:
    assert clock_reads("import time\nx = time.time_ns()\n") == [2]
    assert clock_reads("from datetime import datetime\nx = datetime.now()\n") == [2]
    assert clock_reads("def f(clock=time.time_ns):\n    return clock()\n") == []

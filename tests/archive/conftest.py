"""Each archive test runs on the embedded SQLite store and on a real PostgreSQL server (tests.services)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import PostgresLedger


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for a new ledger: a file in tmp_path, or a fresh provisioned database (the writer role)."""
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    pg: PostgresLedger = request.getfixturevalue("postgres_ledger")
    yield pg.writer_url

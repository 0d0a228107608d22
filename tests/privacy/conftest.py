"""The ``sealing`` fixture: a place for a sealing ledger on each backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineage_ledger.privacy.keys import PRIVACY_KEYS_ENV_VAR
from lineage_ledger.privacy.keystore import KEY_STORE_ENV_VAR
from tests.privacy.helpers import Sealing


@pytest.fixture(params=["sqlite", "postgres"])
def sealing(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sealing:
    """A place for a sealing ledger on the embedded default and on a real PostgreSQL server (the ledger as
    the writer role; the subject key store, apart from it, as the database owner)."""
    keys_file = tmp_path / "ledger.privacy"
    if request.param == "sqlite":
        return Sealing(str(tmp_path / "ledger.db"), keys_file)
    pg = request.getfixturevalue("postgres_ledger")
    monkeypatch.setenv(PRIVACY_KEYS_ENV_VAR, str(keys_file))
    monkeypatch.setenv(KEY_STORE_ENV_VAR, pg.owner_url)
    return Sealing(pg.writer_url, keys_file)

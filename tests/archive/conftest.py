"""Each archive test runs on the embedded SQLite store and on a real PostgreSQL server (tests.services)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import PostgresLedger
from tests.services_s3 import S3_BUCKET, s3_endpoint

__all__ = ["s3_endpoint"]  # the session fixture, for the tests of this package


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for a new ledger: a file in tmp_path, or a fresh provisioned database (the writer role)."""
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    pg: PostgresLedger = request.getfixturevalue("postgres_ledger")
    yield pg.writer_url


@pytest.fixture
def s3_archive(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """An archive location in the test S3 server: a prefix of its own in the bucket (credentials in the
    environment, as in production)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "lineage-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lineage-test-secret")
    # the test server (gofakes3) takes no aws-chunked uploads, the AWS SDK's default checksum upload
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    prefix = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"s3://{S3_BUCKET}/{prefix}?endpoint={s3_endpoint}"

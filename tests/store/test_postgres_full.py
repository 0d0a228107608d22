"""PostgreSQL out of disk space: a write is refused as StorageFullError (pushback: nothing written, retry
later), not as a store failure of unknown outcome; once space returns the same batch is recorded."""

from __future__ import annotations

import pwd
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.errors import StorageFullError
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store.postgres import provision
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_log_signer, make_producer_signer, token_events
from tests.services import AUDITOR_ROLE, WRITER_ROLE, drop_database, sql, with_database
from tests.tmpfs import fill, needs_root, tmpfs


@needs_root
def test_a_full_tablespace_is_storage_full_and_recovers(postgres_server: str) -> None:
    owner = pwd.getpwnam("postgres")
    # the server runs as postgres, which cannot reach pytest's root-only directories
    where = Path(tempfile.mkdtemp(prefix="lineage-pg-full-"))
    name = f"full_{uuid.uuid4().hex[:8]}"
    try:
        options = f"mode=0700,uid={owner.pw_uid},gid={owner.pw_gid}"
        with tmpfs(where, "24m", options) as disk:
            sql(postgres_server, f"CREATE TABLESPACE {name} LOCATION '{disk}'")
            try:
                sql(postgres_server, f'CREATE DATABASE "{name}" TABLESPACE {name}')
                provision(postgres_server, name, WRITER_ROLE, AUDITOR_ROLE)
                url = with_database(postgres_server, name)
                signer = make_producer_signer()
                envelopes = [
                    seal_batch(
                        token_events(200, label=f"pg-{i}"), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer
                    )
                    for i in range(3)
                ]
                with Ledger.create(url, make_log_signer()) as ledger:
                    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, signer.public_key)
                    ledger.append(envelopes[0])
                    filler = disk / "filler"
                    fill(filler)
                    with pytest.raises(StorageFullError):
                        ledger.append(envelopes[1])
                    filler.unlink()
                    receipts = ledger.append(envelopes[1]).receipts
                    assert not any(r.duplicate for r in receipts)
                    ledger.append(envelopes[2])
                    ledger.seal()
                report = verify_ledger(url, workers=1)
                assert report.ok, report.problems
            finally:
                drop_database(postgres_server, name)
                sql(postgres_server, f"DROP TABLESPACE IF EXISTS {name}")
    finally:
        shutil.rmtree(where, ignore_errors=True)

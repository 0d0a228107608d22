"""The PostgreSQL store beyond the shared contract: migrations, roles, TRUNCATE, a whole ledger and the CLI.

Every test runs against a real server (tests/services.py) in a database of its own.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.note import NoteVerifier, parse_verifier_key, verifier_key
from lineage_ledger.errors import NotFoundError, StoreError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, write_signer_key
from lineage_ledger.ledger import verify as verify_module
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import open_store
from lineage_ledger.store.base import (
    ArchiveRow,
    BatchWrite,
    CheckpointRow,
    EntryRow,
    EnvelopeRow,
    ExpiryRow,
    OffsetRow,
    PromiseRow,
    QuarantineRow,
    RollupDay,
    RollupRow,
    SchemaRow,
)
from lineage_ledger.workload import PRODUCERS, batches, generate
from tests.conftest import make_log_signer, make_producer_signer, token_events
from tests.services import AUDITOR_ROLE, WRITER_ROLE, PostgresLedger, drop_database, sql, with_database

LEDGER_TABLES = (
    "schema_migrations",
    "meta",
    "entries",
    "envelopes",
    "nodes",
    "checkpoints",
    "revocations",
    "links",
    "map_nodes",
    "promises",
    "rollups",
    "rollup_days",
    "archives",
    "archive_keys",
    "expiries",
)
T0 = 1_763_000_000_000_000_000


def _refused(url: str, statement: str) -> Exception:
    """The error the server raises for ``statement`` on ``url`` (the test fails if it succeeds)."""
    import psycopg

    with pytest.raises(psycopg.Error) as refused:
        sql(url, statement)
    return refused.value


def _split_into_two_block_chunks(monkeypatch: pytest.MonkeyPatch, block_size: int) -> None:
    """Make verify hand several chunks to its worker processes (its production target is 50,000 entries)."""
    chunks = verify_module._chunks

    def small(size: int, seal_indices: list[int], target: int) -> list[tuple[int, int]]:
        return chunks(size, seal_indices, 2 * block_size)

    monkeypatch.setattr(verify_module, "_chunks", small)


# -- migrations ---------------------------------------------------------------------------------------------


def _old_ledger(postgres_server: str, name: str) -> str:
    """A database as a version that knew only migration 1 left it, holding a sealed batch; its owner URL."""
    from lineage_ledger.store.postgres import MIGRATIONS, apply_migrations

    sql(postgres_server, f'CREATE DATABASE "{name}"')
    url = with_database(postgres_server, name)
    assert apply_migrations(url, MIGRATIONS[:1]) == [1]
    sql(url, "INSERT INTO meta VALUES ('origin', 'old.example/log'), ('store_schema', '1')")
    for i in range(3):
        sql(
            url,
            "INSERT INTO entries VALUES (%s, %s, %s, NULL, %s, %s, 'ok', %s)",
            (i, "token:a", f"e{i}", bytes([i - 1]) * 32 if i else bytes(32), bytes([i]) * 32, f'{{"i":{i}}}'.encode()),
        )
    sql(url, "INSERT INTO envelopes VALUES (%s, 'svc', 'k1', %s, %s, %s, 0)", (b"d" * 32, b"{}", b"sig", b"l" * 96))
    sql(url, "INSERT INTO checkpoints VALUES (3, 'note-3')")
    return url


def test_a_ledger_from_an_older_schema_opens_migrated_with_its_data_intact(postgres_server: str) -> None:
    from lineage_ledger.store.postgres import SCHEMA_VERSION, PostgresStore

    url = _old_ledger(postgres_server, f"ledger_old_{uuid.uuid4().hex[:8]}")
    before = sql(url, "SELECT idx, subject, event_id, prev, leaf, body FROM entries ORDER BY idx")
    with pytest.raises(StoreError, match="schema version 1"):  # a reader may not migrate; it says how to
        PostgresStore(url, readonly=True)

    store = PostgresStore(url)  # the owner opens it for writing: migrations 2 to 9 run
    migrations = sql(url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in migrations] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert SCHEMA_VERSION == 9
    # migration 5 dropped the policies table, which nothing read: the documents are in the entries
    assert sql(url, "SELECT to_regclass('policies') IS NULL") == [(True,)]
    assert sql(url, "SELECT idx, subject, event_id, prev, leaf, body FROM entries ORDER BY idx") == before
    assert store.size() == 3
    assert [r.body for r in store.entries(0, 3)] == [b'{"i":0}', b'{"i":1}', b'{"i":2}']
    assert store.meta()["origin"] == "old.example/log"
    assert store.latest_checkpoint() == CheckpointRow(3, "note-3")
    assert store.envelope(b"d" * 32).producer == "svc"
    # the tables migration 2 added work, and are append-only like the old ones
    store.write(
        BatchWrite(
            entries=[EntryRow(3, "token:a", "e3", None, bytes([2]) * 32, bytes([3]) * 32, "ok", b"{}")],
            revocations=[("token:a", 3)],
            links=[("resource", "/x", "0000000000000000010.00000", 3, "token:a")],
            map_nodes=[(b"h" * 32, b"node")],
            offsets=[OffsetRow("orders", 0, 7)],
            schemas=[SchemaRow(b"f" * 8, "Batch", '"int"', "0000000000000000010.00000")],
            quarantine=[QuarantineRow("orders", 0, 6, "bad signature", b"m" * 32, None)],
            promise=PromiseRow(3, 1, b"{}"),
        )
    )
    assert store.revoked(["token:a"]) == {"token:a": 3}
    assert store.offsets("orders") == {0: 7}
    assert store.chain_breaks() == []
    for table in ("revocations", "links", "map_nodes", "offsets", "schemas", "quarantine", "promises"):
        assert "append-only" in str(_refused(url, f"DELETE FROM {table}"))
    store.close()
    assert PostgresStore(url, readonly=True).size() == 4  # a second open finds nothing to do


def test_provision_migrates_an_older_ledger_for_its_roles(postgres_server: str) -> None:
    from lineage_ledger.store.postgres import provision

    name = f"ledger_old_{uuid.uuid4().hex[:8]}"
    _old_ledger(postgres_server, name)
    assert provision(postgres_server, name, WRITER_ROLE, AUDITOR_ROLE) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert provision(postgres_server, name, WRITER_ROLE, AUDITOR_ROLE) == []  # idempotent
    writer = open_store(with_database(postgres_server, name, user=WRITER_ROLE))
    assert writer.size() == 3
    writer.write(BatchWrite(links=[("user", "u", "0000000000000000010.00000", 0, "token:a")]))
    assert writer.links("user", "u") == [("0000000000000000010.00000", 0, "token:a")]
    writer.close()


def test_a_schema_newer_than_this_version_is_refused(postgres_ledger: PostgresLedger) -> None:
    sql(postgres_ledger.owner_url, "INSERT INTO schema_migrations (version) VALUES (99)")
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer than this version"):
            open_store(postgres_ledger.writer_url, readonly=readonly)


def test_an_empty_database_is_no_ledger_to_a_reader_and_a_writer_without_ddl_rights(postgres_server: str) -> None:
    name = f"ledger_empty_{uuid.uuid4().hex[:8]}"
    sql(postgres_server, f'CREATE DATABASE "{name}"')
    with pytest.raises(NotFoundError):
        open_store(with_database(postgres_server, name), readonly=True)
    with pytest.raises(StoreError, match="provision"):
        open_store(with_database(postgres_server, name, user=WRITER_ROLE))
    owner = open_store(with_database(postgres_server, name))  # the owner may create the schema
    assert owner.meta() == {}
    owner.close()


# -- roles and the append-only guard -----------------------------------------------------------------------


def test_provision_grants_insert_and_select_to_the_writer_and_select_to_the_auditor(
    postgres_ledger: PostgresLedger,
) -> None:
    rows = sql(
        postgres_ledger.owner_url,
        """
        SELECT t, r, p, has_table_privilege(r, t, p)
        FROM unnest(%s::text[]) AS t, unnest(%s::text[]) AS r,
             unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p
        """,
        (list(LEDGER_TABLES), [WRITER_ROLE, AUDITOR_ROLE]),
    )
    granted = {(t, r, p) for t, r, p, ok in rows if ok}
    expected = {(t, AUDITOR_ROLE, "SELECT") for t in LEDGER_TABLES}
    expected |= {(t, WRITER_ROLE, p) for t in LEDGER_TABLES for p in ("SELECT", "INSERT")}
    expected.discard(("schema_migrations", WRITER_ROLE, "INSERT"))  # only a migration records a migration
    expected.add(("entries", WRITER_ROLE, "DELETE"))  # of archived ranges only: the entries trigger decides
    assert granted == expected


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET verdict = 'forged'",
        "TRUNCATE entries",
        "UPDATE meta SET value = 'x'",
        "DELETE FROM checkpoints",
        "TRUNCATE links",
        "ALTER TABLE entries DISABLE TRIGGER USER",
        "DROP TRIGGER entries_append_only ON entries",
        "DROP TABLE checkpoints",
        "INSERT INTO schema_migrations (version) VALUES (4)",
        "CREATE TABLE entries_shadow (idx bigint)",
    ],
)
def test_the_writer_role_is_refused_by_its_privileges(postgres_ledger: PostgresLedger, statement: str) -> None:
    import psycopg

    store = open_store(postgres_ledger.writer_url)
    store.initialise({"origin": "roles.example/log"})
    store.write(
        BatchWrite(
            entries=[EntryRow(0, "token:a", "e0", None, bytes(32), bytes([1]) * 32, "ok", b"{}")],
            checkpoint=CheckpointRow(1, "note"),
            links=[("resource", "/x", "0000000000000000010.00000", 0, "token:a")],
        )
    )
    error = _refused(postgres_ledger.writer_url, statement)
    # refused for want of a privilege (or ownership), before any trigger is reached
    assert isinstance(error, psycopg.errors.InsufficientPrivilege), error
    assert store.size() == 1
    assert store.latest_checkpoint() == CheckpointRow(1, "note")
    store.close()


def test_the_auditor_may_read_but_never_write(postgres_ledger: PostgresLedger) -> None:
    import psycopg

    writer = open_store(postgres_ledger.writer_url)
    writer.initialise({"origin": "roles.example/log"})
    writer.close()
    auditor = open_store(postgres_ledger.auditor_url, readonly=True)
    assert auditor.meta()["origin"] == "roles.example/log"
    auditor.close()
    # the role's sessions default to read-only; switching that off is allowed, the INSERT still is not
    with psycopg.connect(postgres_ledger.auditor_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO meta VALUES ('k', 'v')")
        conn.execute("SET default_transaction_read_only = off")
        for statement in ("INSERT INTO meta VALUES ('k', 'v')", "INSERT INTO entries (idx) VALUES (7)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # and a store opened for writing as the auditor cannot write either
    store = open_store(postgres_ledger.auditor_url)
    with pytest.raises(StoreError):
        store.write(BatchWrite(checkpoint=CheckpointRow(1, "forged")))
    store.close()


def test_the_writer_may_delete_only_event_entries_of_an_archived_range(postgres_ledger: PostgresLedger) -> None:
    """The writer holds DELETE on entries for the archive tier; the entries trigger refuses every row outside
    a recorded archived range, and the system entries inside one."""
    store = open_store(postgres_ledger.writer_url)
    store.initialise({"origin": "roles.example/log"})
    rows = [EntryRow(i, "token:a", f"e{i}", None, bytes(32), bytes([i]) * 32, "ok", b"{}") for i in range(3)]
    rows.append(EntryRow(3, "ledger:blocks", None, None, bytes(32), bytes([3]) * 32, "ok", b"{}"))
    store.write(BatchWrite(entries=rows, archives=[ArchiveRow(1, 3, "/a", "f.parquet", b"s" * 32, 9, b"")]))
    writer = postgres_ledger.writer_url
    assert "outside an archived range" in str(_refused(writer, "DELETE FROM entries WHERE idx = 0"))
    assert "outside an archived range" in str(_refused(writer, "DELETE FROM entries WHERE idx = 3"))  # a seal
    assert "permission denied" in str(_refused(writer, "UPDATE entries SET verdict = 'x' WHERE idx = 1"))
    with pytest.raises(StoreError, match="outside an archived range"):
        store.delete_archived(0, 3)  # entry 0 is not archived: nothing goes
    assert [r.index for r in store.entries(0, 4)] == [0, 1, 2, 3]
    assert store.delete_archived(1, 3) == 2  # the event entries; the seal stays
    assert [r.index for r in store.entries(0, 4)] == [0, 3]
    store.close()


def test_truncate_is_refused_on_every_table_even_for_the_owner(postgres_ledger: PostgresLedger) -> None:
    store = open_store(postgres_ledger.writer_url)
    store.initialise({"origin": "truncate.example/log"})
    store.write(
        BatchWrite(
            entries=[EntryRow(0, "token:a", "e0", None, bytes(32), bytes([1]) * 32, "ok", b"{}")],
            envelopes=[EnvelopeRow(b"d" * 32, "svc", "k1", b"{}", b"sig", bytes([1]) * 32, 0)],
            nodes=[(8, 0, b"n" * 32)],
            checkpoint=CheckpointRow(1, "note"),
            revocations=[("token:a", 0)],
            links=[("resource", "/x", "0000000000000000010.00000", 0, "token:a")],
            map_nodes=[(b"h" * 32, b"node")],
            promise=PromiseRow(0, 1, b"{}"),
            # an archived range that does not hold entry 0: deleting entry 0 stays refused
            archives=[ArchiveRow(5, 9, "/archive", "f.parquet", b"s" * 32, 10, b"")],
            archive_keys=[("s:token:b", 5, 5, 9)],
            expiries=[ExpiryRow(5, 9, "p", 4, 11)],
        )
    )
    day = RollupDay("2025-11-12", 0, 1)
    store.add_rollups(day, [RollupRow(day.day, "token:a", 1, 0, "a", "a", 0, 0, "[]", "{}")])
    owner = postgres_ledger.owner_url
    for table in LEDGER_TABLES:
        error = _refused(owner, f"TRUNCATE {table}")
        assert "append-only" in str(error), (table, error)
        assert "append-only" in str(_refused(owner, f"DELETE FROM {table}")), table
    counts = {t: sql(owner, f"SELECT count(*) FROM {t}")[0][0] for t in LEDGER_TABLES}
    assert all(n >= 1 for n in counts.values()), counts
    store.close()


# -- a whole ledger ----------------------------------------------------------------------------------------


def _fixed_clock(start: int = T0 + 10**15) -> Callable[[], int]:
    ticks = itertools.count(start, 1_000)
    return lambda: next(ticks)


def _build(url: str, envelopes: list[bytes], signers: dict[str, Ed25519Signer]) -> tuple[str, int]:
    """Create a ledger at ``url`` with a fixed clock, register the producers, append, seal; (note, size)."""
    settings = LedgerSettings(block_size=100, block_seconds=1e9)
    with Ledger.create(url, make_log_signer(), settings=settings, clock=_fixed_clock()) as ledger:
        for name, signer in signers.items():
            ledger.register_key(name, f"{name}-1", signer.public_key)
        for envelope in envelopes:
            ledger.append(envelope)
        checkpoint = ledger.seal()
        assert checkpoint is not None
        return checkpoint.note, ledger.size


def test_a_full_ledger_on_postgres_verifies_and_matches_sqlite_byte_for_byte(
    postgres_ledger: PostgresLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = generate(40, seed=11, start_ns=T0)
    signers = {p: Ed25519Signer(p, bytes([i]) * 32) for i, p in enumerate(PRODUCERS)}
    envelopes = list(batches(workload, signers, {p: f"{p}-1" for p in PRODUCERS}, max_batch=25))
    note, size = _build(postgres_ledger.writer_url, envelopes, signers)
    sqlite_note, sqlite_size = _build(str(tmp_path / "same.db"), envelopes, signers)
    # same envelopes, same clock: the same entries, so the same signed checkpoint
    assert (note, size) == (sqlite_note, sqlite_size)
    assert size > 300

    key = _verifier(make_log_signer())
    for workers in (1, 2):
        report = verify_ledger(postgres_ledger.auditor_url, verifier=key, workers=workers)
        assert report.ok, report.problems
        assert report.size == size
    _split_into_two_block_chunks(monkeypatch, 100)
    report = verify_ledger(postgres_ledger.auditor_url, verifier=key, workers=2)  # in worker processes
    assert report.ok, report.problems
    assert report.blocks >= 4

    postgres, sqlite = open_store(postgres_ledger.auditor_url, readonly=True), open_store(str(tmp_path / "same.db"))
    family = workload.traced[0]
    assert postgres.descendant_births(f"token:{family}") == sqlite.descendant_births(f"token:{family}")
    assert postgres.descendant_births(f"token:{family}")
    assert postgres.chain_breaks() == sqlite.chain_breaks() == []
    postgres.close()
    sqlite.close()


def test_verify_catches_a_rewrite_made_by_a_superuser_who_disabled_the_triggers(
    postgres_ledger: PostgresLedger,
) -> None:
    import psycopg

    signer = Ed25519Signer("test-producer", bytes(range(32, 64)))
    envelopes = [_seal(token_events(10, start_ns=T0 + i * 10**12, label=f"b{i}"), signer) for i in range(3)]
    _build(postgres_ledger.writer_url, envelopes, {"test-producer": signer})
    key = _verifier(make_log_signer())
    assert verify_ledger(postgres_ledger.auditor_url, verifier=key, workers=1).ok
    with psycopg.connect(postgres_ledger.owner_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")  # triggers off for this transaction
        conn.execute("UPDATE entries SET verdict = 'ok-forged' WHERE idx = 5")
    report = verify_ledger(postgres_ledger.auditor_url, verifier=key, workers=1)
    assert not report.ok
    assert report.first_bad_index == 5


def _seal(events: list[bytes], signer: Ed25519Signer) -> bytes:
    return seal_batch(events, producer="test-producer", key_id="test-producer-1", signer=signer)


# -- the command line --------------------------------------------------------------------------------------


def _lineage(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else captured.err


def test_cli_ingest_and_verify_against_a_postgresql_url(
    postgres_ledger: PostgresLedger,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DEFAULT_KEY_ENV_VAR, raising=False)
    log_key, producer_key = tmp_path / "log.key", tmp_path / "producer.key"
    log_signer = Ed25519Signer.generate("cli.postgres.example/log")
    write_signer_key(log_key, log_signer)
    writer = postgres_ledger.writer_url.replace("postgresql://", "postgres://", 1)  # both schemes open it
    Ledger.create(writer, log_signer).close()
    keys = ("--ledger", writer, "--log-key", str(log_key))
    code, out = _lineage(
        capsys,
        "keys",
        "register",
        *keys,
        "--producer",
        "cli-producer",
        "--key-id",
        "cli-1",
        "--generate",
        str(producer_key),
    )
    assert code == 0, out
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(token_events(120, start_ns=time.time_ns() - 3_600 * 10**9)) + b"\n")
    code, out = _lineage(
        capsys,
        "ingest",
        str(events),
        *keys,
        "--producer-key",
        str(producer_key),
        "--key-id",
        "cli-1",
        "--batch",
        "25",
    )
    assert code == 0, out
    assert (out["recorded"], out["violations"], out["size"]) == (120, 0, out["sealed_size"])

    verifier = str(_verifier(log_signer))
    for workers in ("1", "2"):
        code, out = _lineage(
            capsys, "verify", "--ledger", postgres_ledger.auditor_url, "--key", verifier, "--workers", workers
        )
        assert code == 0, out
        assert out["ok"], out["problems"]
        assert out["size"] == 123  # the key entry and its seal, 120 events and theirs
    code, out = _lineage(capsys, "checkpoint", "--ledger", postgres_ledger.auditor_url)
    assert code == 0, out


def _verifier(signer: Ed25519Signer) -> NoteVerifier:
    return parse_verifier_key(verifier_key(signer.name, signer.public_key))


def test_cli_init_then_ingest_on_postgresql(
    postgres_ledger: PostgresLedger,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DEFAULT_KEY_ENV_VAR, raising=False)
    url = postgres_ledger.writer_url
    keys = ("--ledger", url, "--log-key", str(tmp_path / "log.key"), "--producer-key", str(tmp_path / "cli.key"))
    code, out = _lineage(capsys, "init", *keys)
    assert code == 0, out
    assert (tmp_path / "log.key").stat().st_mode & 0o777 == 0o600
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(token_events(30, start_ns=time.time_ns() - 3_600 * 10**9)) + b"\n")
    code, out = _lineage(capsys, "ingest", str(events), *keys)
    assert code == 0, out
    assert out["recorded"] == 30
    # a second init must not overwrite anything
    code, out = _lineage(capsys, "init", *keys)
    assert code == 3, out
    # without a producer key path there is nowhere beside a database to put one: a clear usage error
    code, out = _lineage(capsys, "init", "--ledger", url, "--log-key", str(tmp_path / "log.key"))
    assert code == 2, out


# -- a connection that breaks -------------------------------------------------------------------------------


def _terminate_writer_sessions(postgres_server: str, database: str) -> int:
    """What a server restart or an administrator does to the ledger's sessions: end them (their count)."""
    rows = sql(
        postgres_server,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
        (database, WRITER_ROLE),
    )
    return len(rows)


def test_a_broken_connection_is_reopened_and_the_ledger_carries_on(
    postgres_server: str, postgres_ledger: PostgresLedger
) -> None:
    signer = make_producer_signer()
    ledger = Ledger.create(postgres_ledger.writer_url, make_log_signer())
    ledger.register_key("test-producer", "test-producer-1", signer.public_key)
    batches = [_seal(token_events(10, start_ns=T0 + i * 10**12, label=f"c{i}"), signer) for i in range(3)]
    ledger.append(batches[0])
    # the store's two sessions: the one that writes and the one that reads
    assert _terminate_writer_sessions(postgres_server, postgres_ledger.database) == 2
    assert ledger.store.size() == 11  # a read finds the connection broken and repeats itself on a new one
    # the write's BEGIN finds its connection broken: nothing was sent, so it goes again on a new one
    ledger.append(batches[1])
    assert _terminate_writer_sessions(postgres_server, postgres_ledger.database) == 2
    # both at once: the batch lands once, in order
    result = ledger.append(batches[2])
    assert not any(r.duplicate for r in result.receipts)
    assert [r.index for r in result.receipts] == list(range(21, 31))
    ledger.seal()
    ledger.close()
    assert verify_ledger(postgres_ledger.auditor_url).ok


def test_a_sharded_ledger_on_postgresql_from_provision_to_verify(
    postgres_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lineage_ledger.core.model import read_subject
    from lineage_ledger.ledger.shards import ShardedLedger

    monkeypatch.delenv(DEFAULT_KEY_ENV_VAR, raising=False)
    name = f"sharded_{uuid.uuid4().hex[:8]}"
    databases = [name, f"{name}_shard_0", f"{name}_shard_1"]
    try:
        code, out = _lineage(capsys, "provision", "--admin-url", postgres_server, "--database", name, "--shards", "2")
        assert code == 0, out
        assert sorted(out["databases"]) == sorted(databases)
        assert all(steps == [1, 2, 3, 4, 5, 6, 7, 8, 9] for steps in out["databases"].values())
        url = with_database(postgres_server, name, user=WRITER_ROLE)
        keys = ("--log-key", str(tmp_path / "log.key"), "--producer-key", str(tmp_path / "cli.key"))
        code, out = _lineage(capsys, "init", "--ledger", url, "--shards", "2", "--partitions", "4", *keys)
        assert code == 0, out
        # the writer role appends to the shards (the Kafka consumers' work, done here directly) ...
        producer = make_producer_signer()
        sharded = ShardedLedger.open(url, make_log_signer_from(tmp_path / "log.key"))
        sharded.register_key("test-producer", "test-producer-1", producer.public_key)
        by_shard: dict[int, list[bytes]] = {}
        for event in token_events(40, tokens=8, start_ns=T0):
            by_shard.setdefault(sharded.layout.shard_of(read_subject(event)[0]), []).append(event)
        for group in by_shard.values():
            sharded.append(_seal(group, producer))
        assert sharded.seal() is not None
        sharded.close()
        # ... and the whole sharded ledger verifies from the command line
        code, out = _lineage(capsys, "verify", "--ledger", url, "--log-key", str(tmp_path / "log.key"))
        assert code == 0, out
        assert out["ok"]
        assert len(out["shards"]) == 2
        assert sum(s["size"] for s in out["shards"]) > 40
    finally:
        for database in databases:
            drop_database(postgres_server, database)


def make_log_signer_from(path: Path) -> Ed25519Signer:
    from lineage_ledger.keys import load_signer

    signer = load_signer(path)
    assert isinstance(signer, Ed25519Signer)
    return signer

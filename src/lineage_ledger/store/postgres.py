"""The PostgreSQL store: the same contract as the SQLite store, on a server shared by several processes.

Append-only is enforced by the database in two independent ways:

* privileges: ``provision`` creates the tables as the admin who runs it and grants the ledger's writer role
  only INSERT and SELECT, and the auditor role only SELECT, so neither can UPDATE, DELETE, TRUNCATE, ALTER or
  DROP anything;
* triggers: every ledger table has a row trigger before UPDATE or DELETE and a statement trigger before
  TRUNCATE that raise "append-only", so even the tables' owner (and a superuser) is refused by default.

The owner can still drop those triggers, and a superuser can switch them off for a session; that is the
boundary of what a database can promise about itself, and ``lineage verify`` is what catches a rewrite
made that way.

The schema is versioned: ``schema_migrations`` records every step of ``MIGRATIONS`` applied, in order. A
write-mode open applies missing steps when its role may (the owner's), so a ledger created by an older
version opens in a newer one; otherwise it says to run ``provision``, which migrates as the admin. Text
columns compare bytewise (``COLLATE "C"``), as SQLite's do, so prefix and time-window queries agree.

Durability is the server's: a batch is acknowledged after its transaction commits, durable under the
server's default ``synchronous_commit = on``.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from lineage_ledger.errors import (
    ConflictError,
    InputError,
    LockedError,
    NotFoundError,
    StorageFullError,
    StoreError,
)
from lineage_ledger.store._archive_rows import ARCHIVE_DELETE, ArchiveRows, archive_inserts
from lineage_ledger.store._reads import ENTRY_COLUMNS, ENVELOPE_COLUMNS, ROLLUP_COLUMNS, SqlReads
from lineage_ledger.store.base import (
    BatchWrite,
    ChainBreak,
    EntryRow,
    QuarantineRow,
    RollupDay,
    RollupRow,
    SchemaRow,
)
from lineage_ledger.store.writer_lock import Holder, locked_message

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "PostgresStore", "apply_migrations", "provision"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: applied once, in version order, inside the transaction that records it."""

    version: int
    description: str
    statements: tuple[str, ...]
    tables: tuple[str, ...]
    """Ledger tables this step creates; each gets the append-only triggers in the same step."""


def _guards(table: str) -> tuple[str, str]:
    return (
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()",
    )


def _migration(version: int, description: str, tables: tuple[str, ...], *statements: str) -> Migration:
    guards = tuple(stmt for table in tables for stmt in _guards(table))
    return Migration(version, description, (*statements, *guards), tables)


MIGRATIONS: Final[tuple[Migration, ...]] = (
    _migration(
        1,
        "the log: settings, entries, envelopes, tree nodes, checkpoints, policies; the append-only guard",
        ("schema_migrations", "meta", "entries", "envelopes", "nodes", "checkpoints", "policies"),
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'lineage ledger tables are append-only: % on %', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation';
        END
        $$
        """,
        """
        CREATE TABLE schema_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
        """,
        'CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL)',
        """
        CREATE TABLE entries (
            idx bigint PRIMARY KEY,
            subject text COLLATE "C" NOT NULL,
            event_id text COLLATE "C" UNIQUE,
            parent text COLLATE "C",
            prev bytea NOT NULL,
            leaf bytea NOT NULL,
            verdict text NOT NULL,
            body bytea NOT NULL
        )
        """,
        "CREATE INDEX entries_subject ON entries (subject, idx)",
        "CREATE INDEX entries_parent ON entries (parent) WHERE parent IS NOT NULL",
        """
        CREATE TABLE envelopes (
            digest bytea PRIMARY KEY,
            producer text NOT NULL,
            key_id text NOT NULL,
            payload bytea NOT NULL,
            signature bytea NOT NULL,
            event_leaves bytea NOT NULL,
            first_idx bigint NOT NULL
        )
        """,
        "CREATE INDEX envelopes_first_idx ON envelopes (first_idx)",
        """
        CREATE TABLE nodes (
            level integer NOT NULL,
            idx bigint NOT NULL,
            hash bytea NOT NULL,
            PRIMARY KEY (level, idx)
        )
        """,
        "CREATE TABLE checkpoints (size bigint PRIMARY KEY, note text NOT NULL)",
        """
        CREATE TABLE policies (
            digest bytea PRIMARY KEY,
            policy_id text NOT NULL,
            version text NOT NULL,
            idx bigint NOT NULL,
            document bytea NOT NULL
        )
        """,
    ),
    _migration(
        2,
        "lineage indexes: the revocation set, links (resources, users, inputs) and the subject map's nodes",
        ("revocations", "links", "map_nodes"),
        'CREATE TABLE revocations (subject text COLLATE "C" PRIMARY KEY, idx bigint NOT NULL)',
        """
        CREATE TABLE links (
            kind text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            at text COLLATE "C" NOT NULL,
            idx bigint NOT NULL,
            subject text COLLATE "C" NOT NULL,
            PRIMARY KEY (kind, key, at, idx)
        )
        """,
        "CREATE TABLE map_nodes (hash bytea PRIMARY KEY, node bytea NOT NULL)",
    ),
    _migration(
        3,
        "transport: consumed positions (committed with the rows), registered Avro schemas, refused messages",
        ("offsets", "schemas", "quarantine"),
        """
        CREATE TABLE offsets (
            source text COLLATE "C" NOT NULL,
            part integer NOT NULL,
            next_offset bigint NOT NULL,
            PRIMARY KEY (source, part, next_offset)
        )
        """,
        """
        CREATE TABLE schemas (
            fingerprint bytea PRIMARY KEY,
            name text NOT NULL,
            text text NOT NULL,
            registered_at text NOT NULL,
            seq bigint GENERATED ALWAYS AS IDENTITY
        )
        """,
        """
        CREATE TABLE quarantine (
            source text COLLATE "C" NOT NULL,
            part integer NOT NULL,
            "offset" bigint NOT NULL,
            reason text NOT NULL,
            digest bytea NOT NULL,
            value bytea,
            PRIMARY KEY (source, part, "offset")
        )
        """,
    ),
    _migration(
        4,
        "the log's signed promises about entries not yet covered by a checkpoint when acknowledged",
        ("promises",),
        "CREATE TABLE promises (first bigint PRIMARY KEY, length bigint NOT NULL, promise bytea NOT NULL)",
    ),
    _migration(
        5,
        "drop the policies table: nothing read it, and the policy documents are in the log's own entries",
        (),
        "DROP TABLE policies",
    ),
    _migration(
        6,
        "witness cosignatures of checkpoints (C2SP tlog-cosignature lines), kept beside the checkpoint",
        ("cosignatures",),
        """
        CREATE TABLE cosignatures (
            size bigint NOT NULL,
            witness text COLLATE "C" NOT NULL,
            key_id bigint NOT NULL,
            line text NOT NULL,
            PRIMARY KEY (size, witness, key_id)
        )
        """,
    ),
    _migration(
        7,
        "RFC 3161 timestamp tokens of checkpoints (DER TimeStampToken), kept beside the checkpoint",
        ("timestamps",),
        "CREATE TABLE timestamps (size bigint PRIMARY KEY, token bytea NOT NULL)",
    ),
    _migration(
        8,
        "the archive tier: archived ranges, the keys they hold, expiries; event entries of an archived range "
        "may be deleted, nothing else",
        ("archives", "archive_keys", "expiries"),
        """
        CREATE TABLE archives (
            first bigint PRIMARY KEY,
            last bigint NOT NULL,
            location text NOT NULL,
            file text NOT NULL,
            sha256 bytea NOT NULL,
            record bigint NOT NULL,
            edge_leaves bytea NOT NULL
        )
        """,
        """
        CREATE TABLE archive_keys (
            key text COLLATE "C" NOT NULL,
            first bigint NOT NULL,
            lo bigint NOT NULL,
            hi bigint NOT NULL,
            PRIMARY KEY (key, first)
        )
        """,
        """
        CREATE TABLE expiries (
            first bigint PRIMARY KEY,
            last bigint NOT NULL,
            policy text NOT NULL,
            policy_index bigint NOT NULL,
            record bigint NOT NULL
        )
        """,
        """
        CREATE FUNCTION ledger_entries_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND OLD.event_id IS NOT NULL
               AND EXISTS (SELECT 1 FROM archives WHERE OLD.idx BETWEEN first AND last) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'lineage ledger tables are append-only: % on % outside an archived range',
                TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
        END
        $$
        """,
        "DROP TRIGGER entries_append_only ON entries",
        "CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_entries_guard()",
    ),
    _migration(
        9,
        "daily rollups per token (ledger.rollups) and the days rolled up, kept hot beside the entries",
        ("rollups", "rollup_days"),
        """
        CREATE TABLE rollups (
            day text COLLATE "C" NOT NULL,
            subject text COLLATE "C" NOT NULL,
            events bigint NOT NULL,
            uses bigint NOT NULL,
            first_at text COLLATE "C" NOT NULL,
            last_at text COLLATE "C" NOT NULL,
            first_idx bigint NOT NULL,
            last_idx bigint NOT NULL,
            resources text NOT NULL,
            outcomes text NOT NULL,
            PRIMARY KEY (subject, day)
        )
        """,
        """
        CREATE TABLE rollup_days (
            day text COLLATE "C" PRIMARY KEY,
            first_idx bigint NOT NULL,
            end_idx bigint NOT NULL
        )
        """,
    ),
)
"""Every schema step, oldest first. Append new steps; never edit one that has shipped."""

SCHEMA_VERSION: Final = MIGRATIONS[-1].version
_MIGRATION_LOCK: Final = 0x6C696E656167  # pg_advisory_xact_lock key: serialises concurrent migrations
_WRITER_LOCK: Final = 0x6C696E65_77726974  # pg_advisory_lock key the one writer holds for its session
_ENTRY_COLS: Final = ENTRY_COLUMNS
_ENVELOPE_COLS: Final = ENVELOPE_COLUMNS
_COPY_ENTRIES: Final = f"COPY entries ({_ENTRY_COLS}) FROM STDIN (FORMAT BINARY)"
_ENTRY_TYPES: Final = ("int8", "text", "text", "text", "bytea", "bytea", "text", "bytea")
_PAGE: Final = 4096


def _describe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "a PostgreSQL ledger (unparsable URL)"
    host = params.get("host") or "localhost"
    port = f":{params['port']}" if params.get("port") else ""
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or ''}"


def _connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as e:
        raise InputError("ledger", f"not a PostgreSQL URL: {e}") from e
    # libpq would wait for an unreachable server as long as the OS lets it; the URL may set its own limit
    conninfo = url if "connect_timeout" in params else make_conninfo(url, connect_timeout=10)
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as e:
        raise StoreError(f"cannot open PostgreSQL ledger {_describe(url)}: {e}") from e


def _take_writer_lock(conn: psycopg.Connection[tuple[Any, ...]], where: str) -> None:
    """Hold the ledger's session advisory lock on ``conn`` (the one writer; see store/writer_lock.py), or raise
    LockedError naming the session that holds it. The session describes its process in application_name."""
    me = Holder.this_process()
    name = f"lineage {me.pid}@{me.host}"[:63]
    try:
        conn.execute("SELECT set_config('application_name', %s, false)", (name,))
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_WRITER_LOCK,)).fetchone()
        if row is not None and row[0]:
            return
        found = conn.execute(
            """
            SELECT a.application_name, a.pid, coalesce(host(a.client_addr), 'a local socket'), a.backend_start
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = %s AND l.objid = %s AND l.objsubid = 1
            """,
            (_WRITER_LOCK >> 32, _WRITER_LOCK & 0xFFFFFFFF),
        ).fetchone()
    except psycopg.Error as e:
        raise StoreError(f"cannot take the writer lock of {where}: {e}") from e
    if found is None:
        holder = "another session (it has just let go: try again)"
    else:
        app, backend, client, since = found
        when = since.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        holder = f"{app or 'a session'} (PostgreSQL backend {backend} from {client}, since {when})"
    raise LockedError(locked_message(where, holder))


def _applied(conn: psycopg.Connection[tuple[Any, ...]]) -> list[int]:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return []
    return [int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def _migrate(conn: psycopg.Connection[tuple[Any, ...]], steps: Sequence[Migration]) -> list[int]:
    """Apply the steps not yet recorded, in one transaction under an advisory lock; their versions."""
    known = {m.version for m in steps}
    ordered = sorted(steps, key=lambda m: m.version)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        applied = set(_applied(conn))
        if applied - known:
            raise StoreError(
                f"the ledger's schema has version {max(applied)}, newer than this version of lineage-ledger "
                f"knows ({max(known)}): upgrade lineage-ledger"
            )
        done: list[int] = []
        for step in ordered:
            if step.version in applied:
                continue
            for statement in step.statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (step.version,))
            done.append(step.version)
        return done


def apply_migrations(url: str, steps: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the database at ``url`` up to ``steps`` (by default all of them); the versions applied now.

    The role in ``url`` must be allowed to create tables (the owner or the admin). Idempotent.
    """
    conn = _connect(url)
    try:
        return _migrate(conn, steps)
    except psycopg.Error as e:
        raise StoreError(f"cannot migrate {_describe(url)}: {e}") from e
    finally:
        conn.close()


def provision(
    admin_url: str,
    database: str,
    writer_role: str,
    auditor_role: str,
    *,
    writer_password: str | None = None,
    auditor_password: str | None = None,
) -> list[int]:
    """Create (or bring up to date) a ledger database and its two roles; idempotent.

    ``admin_url`` names a role that may create roles and databases (normally a superuser); it owns the tables.
    Afterwards ``writer_role`` may only SELECT and INSERT ledger rows (never schema_migrations) and
    ``auditor_role`` may only SELECT, both in ``database`` alone; tables added by later migrations get the
    same grants. Passwords, when given, are set (or reset). Returns the migration versions applied now.
    """
    if writer_role == auditor_role:
        raise InputError("auditor_role", "the auditor must be a different role from the writer")
    admin = _connect(admin_url)
    try:
        for role, password in ((writer_role, writer_password), (auditor_role, auditor_password)):
            row = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if row is None:
                admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            elif row[0]:
                raise StoreError(f"role {role} is a superuser: triggers and grants cannot restrain it")
            if password is not None:
                admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            # UTF-8 whatever the cluster's default: the store reads text as str, never as raw bytes
            create = "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            admin.execute(sql.SQL(create).format(sql.Identifier(database)))
        auditor_ro = sql.SQL("ALTER ROLE {} IN DATABASE {} SET default_transaction_read_only = on")
        admin.execute(auditor_ro.format(sql.Identifier(auditor_role), sql.Identifier(database)))
    except psycopg.Error as e:
        raise StoreError(f"cannot provision {database}: {e}") from e
    finally:
        admin.close()

    conn = _connect(make_conninfo(admin_url, dbname=database))
    writer, auditor, db = sql.Identifier(writer_role), sql.Identifier(auditor_role), sql.Identifier(database)
    grants: list[sql.SQL | sql.Composed] = [
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(db, writer, auditor),
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(writer, auditor),
        sql.SQL("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {}").format(writer),
        sql.SQL("REVOKE INSERT ON schema_migrations FROM {}").format(writer),
        sql.SQL("GRANT DELETE ON entries TO {}").format(writer),  # archived ranges only (the entries trigger)
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(auditor),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO {}").format(writer),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(auditor),
    ]
    try:
        applied = _migrate(conn, MIGRATIONS)
        with conn.transaction():
            for grant in grants:
                conn.execute(grant)
        return applied
    except psycopg.Error as e:
        raise StoreError(f"cannot provision {database}: {e}") from e
    finally:
        conn.close()


def _entry(row: Sequence[Any]) -> EntryRow:
    return EntryRow(*row)


class PostgresStore(SqlReads, ArchiveRows):
    """Store backed by one PostgreSQL database; one connection, one transaction per batch."""

    _param = "%s"

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self._where = _describe(url)
        self._lock = threading.RLock()
        self._readonly = readonly
        self._closed = False
        self._db = _connect(url)
        try:
            if not readonly:
                _take_writer_lock(self._db, self._where)
            self._open(readonly)
        except BaseException:
            self._db.close()
            raise
        # Reads use a connection of their own, opened on first use, so a read made while a batch is being
        # committed on another thread (Ledger.pipeline) does not wait for that commit; it sees committed data.
        self._reads: psycopg.Connection[tuple[Any, ...]] | None = None
        self._read_lock = threading.RLock()

    def _open(self, readonly: bool) -> None:
        db = self._db
        try:
            if readonly:
                db.execute("SET default_transaction_read_only = on")
            applied = _applied(db)
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL ledger {self._where}: {e}") from e
        if applied and max(applied) > SCHEMA_VERSION:
            raise StoreError(
                f"{self._where} has schema version {max(applied)}, newer than this version of lineage-ledger "
                f"knows ({SCHEMA_VERSION}): upgrade lineage-ledger"
            )
        if set(applied) == {m.version for m in MIGRATIONS}:
            return
        if readonly:
            if not applied:
                raise NotFoundError(f"no ledger at {self._where}")
            raise StoreError(
                f"{self._where} has schema version {max(applied)}; this version needs {SCHEMA_VERSION}: "
                "open it for writing as its owner once, or run provision, to migrate it"
            )
        try:
            _migrate(db, MIGRATIONS)
        except psycopg.errors.InsufficientPrivilege as e:
            have = max(applied) if applied else "none"
            raise StoreError(
                f"{self._where} has schema version {have}; this version needs {SCHEMA_VERSION} and this role may "
                f"not change the schema: run provision (or open it once as the owner) to migrate: {e}"
            ) from e
        except psycopg.Error as e:
            raise StoreError(f"cannot migrate {self._where}: {e}") from e

    # -- creation ---------------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._all("SELECT key, value FROM meta")}

    def initialise(self, meta: dict[str, str]) -> None:
        rows = sorted({**meta, "store_schema": str(SCHEMA_VERSION)}.items())

        def body(cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
            # two concurrent initialisations both insert "store_schema": the key makes the second one fail
            if cur.execute("SELECT 1 FROM meta LIMIT 1").fetchone() is not None:
                raise ConflictError(f"ledger {self._where} is already initialised")
            cur.executemany("INSERT INTO meta (key, value) VALUES (%s, %s)", rows)

        self._transaction(body)

    # -- writes -----------------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The writing connection, opened again if the last one broke (server restart, network, an
        administrator terminating the session). Called with the lock held. StoreError if the store was closed."""
        if self._closed:
            raise StoreError(f"the store {self._where} is closed")
        if self._db.closed or self._db.broken:
            db = self._reopen(read_only=self._readonly)
            if not self._readonly:
                # the lock went with the broken session; another writer may have taken it since
                try:
                    _take_writer_lock(db, self._where)
                except BaseException:
                    db.close()
                    raise
            self._db = db
        return self._db

    def _reader(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The reading connection (opened on first use, again if it broke). Called with the read lock held."""
        if self._closed:
            raise StoreError(f"the store {self._where} is closed")
        if self._reads is None or self._reads.closed or self._reads.broken:
            self._reads = self._reopen(read_only=True)
        return self._reads

    def _reopen(self, *, read_only: bool) -> psycopg.Connection[tuple[Any, ...]]:
        db = _connect(self.url)
        if read_only:
            try:
                db.execute("SET default_transaction_read_only = on")
            except psycopg.Error as e:
                db.close()
                raise StoreError(f"cannot reopen PostgreSQL ledger {self._where}: {e}") from e
        return db

    def _transaction(self, body: Callable[[psycopg.Cursor[tuple[Any, ...]]], None]) -> None:
        with self._lock:
            for attempt in (1, 2):
                db = self._connection()
                begun = False
                try:
                    with db.transaction():
                        begun = True
                        with db.cursor() as cur:
                            body(cur)
                    return
                except psycopg.errors.UniqueViolation as e:
                    raise ConflictError(f"write refused, nothing was written: {e}") from e
                except psycopg.errors.DiskFull as e:  # an OperationalError, but the server answered: rolled back
                    raise StorageFullError(f"write failed, nothing was written: the server's disk is full ({e})") from e
                except psycopg.OperationalError as e:
                    if not begun and attempt == 1 and db.broken:
                        continue  # it broke while idle (BEGIN failed): nothing was sent, so try a new connection
                    # the connection failed: the server may or may not have committed before it did
                    raise StoreError(
                        f"write failed with the connection, the batch may or may not be stored: {e}"
                    ) from e
                except psycopg.Error as e:
                    raise StoreError(f"write failed, nothing was written: {e}") from e

    def write(self, batch: BatchWrite) -> None:
        def body(cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
            # the two tables that grow with every event go in by COPY, measured about 1.5 to 2 times faster
            # than executemany in pipeline mode (benchmarks/bench_postgres.py)
            if batch.entries:
                with cur.copy(_COPY_ENTRIES) as copy:
                    copy.set_types(list(_ENTRY_TYPES))
                    for row in batch.entries:
                        copy.write_row(row)
            if batch.links:
                # a block's worth at each seal, some possibly stored already by a version that wrote them with
                # each batch: one statement that skips those (COPY cannot)
                kinds, keys, ats, idxs, subjects = zip(*batch.links, strict=True)
                cur.execute(
                    "INSERT INTO links (kind, key, at, idx, subject) SELECT * FROM "
                    "unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[]) ON CONFLICT DO NOTHING",
                    (list(kinds), list(keys), list(ats), list(idxs), list(subjects)),
                )
            with cur.connection.pipeline():
                if batch.envelopes:
                    cur.executemany(
                        f"INSERT INTO envelopes ({_ENVELOPE_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)", batch.envelopes
                    )
                if batch.nodes:
                    cur.executemany("INSERT INTO nodes (level, idx, hash) VALUES (%s, %s, %s)", batch.nodes)
                if batch.revocations:
                    cur.executemany("INSERT INTO revocations (subject, idx) VALUES (%s, %s)", batch.revocations)
                if batch.map_nodes:
                    # thousands per seal, some already stored: one statement, not one per row (COPY cannot skip)
                    cur.execute(
                        "INSERT INTO map_nodes (hash, node) SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
                        "ON CONFLICT DO NOTHING",
                        ([h for h, _ in batch.map_nodes], [n for _, n in batch.map_nodes]),
                        binary=True,
                    )
                if batch.offsets:
                    cur.executemany(
                        "INSERT INTO offsets (source, part, next_offset) VALUES (%s, %s, %s)", batch.offsets
                    )
                if batch.schemas:
                    cur.executemany(
                        "INSERT INTO schemas (fingerprint, name, text, registered_at) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING",
                        batch.schemas,
                    )
                if batch.quarantine:
                    cur.executemany(
                        'INSERT INTO quarantine (source, part, "offset", reason, digest, value) '
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        batch.quarantine,
                    )
                if batch.checkpoint is not None:
                    cur.execute("INSERT INTO checkpoints (size, note) VALUES (%s, %s)", batch.checkpoint)
                if batch.promise is not None:
                    cur.execute("INSERT INTO promises (first, length, promise) VALUES (%s, %s, %s)", batch.promise)
                for statement, rows in archive_inserts(batch, "%s"):
                    cur.executemany(statement, rows)

        self._transaction(body)

    def delete_archived(self, first: int, last: int) -> int:
        if self._readonly:
            raise StoreError(f"the ledger {self._where} is open read-only")
        deleted: list[int] = []

        def body(cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
            cur.execute(ARCHIVE_DELETE.format(p="%s"), (first, last))
            deleted.append(cur.rowcount)

        self._transaction(body)
        return deleted[0]

    # -- reads ------------------------------------------------------------------------------------------

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            for attempt in (1, 2):
                db = self._reader()
                try:
                    # binary: no hex round trip for bytea, no per-element escaping of array parameters
                    return db.execute(query, params, binary=True).fetchall()
                except psycopg.OperationalError as e:
                    if attempt == 2 or not db.broken:
                        raise StoreError(f"read failed: {e}") from e
                    # the connection broke: a read is safe to repeat on a new one
                except psycopg.Error as e:
                    raise StoreError(f"read failed: {e}") from e
            raise AssertionError("unreachable")

    def events_by_id(self, event_ids: Sequence[str]) -> dict[str, EntryRow]:
        rows = self._all(f"SELECT {_ENTRY_COLS} FROM entries WHERE event_id = ANY(%s)", (list(event_ids),))
        return {row[2]: _entry(row) for row in rows}

    def subject_entries(self, subjects: Iterable[str]) -> list[EntryRow]:
        wanted = list(dict.fromkeys(subjects))
        rows = self._all(f"SELECT {_ENTRY_COLS} FROM entries WHERE subject = ANY(%s) ORDER BY subject, idx", (wanted,))
        return [_entry(r) for r in rows]

    def subjects_with_prefix(self, prefix: str) -> list[EntryRow]:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._all(
            f"SELECT {_ENTRY_COLS} FROM entries WHERE subject >= %s AND subject < %s ORDER BY idx", (prefix, upper)
        )
        return [_entry(r) for r in rows]

    def entries_at(self, indices: Sequence[int]) -> list[EntryRow]:
        rows = self._all(f"SELECT {_ENTRY_COLS} FROM entries WHERE idx = ANY(%s) ORDER BY idx", (list(indices),))
        return [_entry(r) for r in rows]

    def children_of_many(self, subjects: Sequence[str]) -> list[EntryRow]:
        rows = self._all(f"SELECT {_ENTRY_COLS} FROM entries WHERE parent = ANY(%s) ORDER BY idx", (list(subjects),))
        return [_entry(r) for r in rows]

    def descendant_births(self, subject: str) -> list[EntryRow]:
        rows = self._all(
            f"""
            WITH RECURSIVE family(subject) AS (
                SELECT %s::text COLLATE "C"
                UNION
                SELECT e.subject FROM entries AS e JOIN family AS f ON e.parent = f.subject
            )
            SELECT {_ENTRY_COLS} FROM entries WHERE parent IN (SELECT subject FROM family) ORDER BY idx
            """,
            (subject,),
        )
        return [_entry(r) for r in rows]

    def add_cosignatures(self, size: int, lines: Sequence[tuple[str, int, str]]) -> None:
        rows = [(size, name, key_id, line) for name, key_id, line in lines]

        def body(cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
            cur.executemany(
                "INSERT INTO cosignatures (size, witness, key_id, line) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                rows,
            )

        self._transaction(body)

    def cosigned_size(self, witness: str, key_id: int) -> int:
        rows = self._all("SELECT max(size) FROM cosignatures WHERE witness = %s AND key_id = %s", (witness, key_id))
        return int(rows[0][0] or 0)

    def add_timestamp(self, size: int, token: bytes) -> None:
        def body(cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
            cur.execute("INSERT INTO timestamps (size, token) VALUES (%s, %s) ON CONFLICT DO NOTHING", (size, token))

        self._transaction(body)

    def add_rollups(self, day: RollupDay, rows: Sequence[RollupRow]) -> None:
        def body(cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
            cur.execute("INSERT INTO rollup_days (day, first_idx, end_idx) VALUES (%s, %s, %s)", day)
            cur.executemany(f"INSERT INTO rollups ({ROLLUP_COLUMNS}) VALUES ({', '.join(['%s'] * 10)})", rows)

        self._transaction(body)

    def map_nodes(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        rows = self._all("SELECT hash, node FROM map_nodes WHERE hash = ANY(%s)", (list(digests),))
        return {bytes(r[0]): bytes(r[1]) for r in rows}

    def subject_index_rows(self) -> tuple[int, Iterator[tuple[str, int]]] | None:
        return None  # entries_subject, an index of the database's own

    def wal_bytes(self) -> int | None:
        return None  # the server's own WAL, watched with the server's own metrics

    def revoked(self, subjects: Sequence[str]) -> dict[str, int]:
        rows = self._all("SELECT subject, idx FROM revocations WHERE subject = ANY(%s)", (list(subjects),))
        return {r[0]: r[1] for r in rows}

    def offsets(self, source: str) -> dict[int, int]:
        rows = self._all("SELECT part, max(next_offset) FROM offsets WHERE source = %s GROUP BY part", (source,))
        return {int(part): int(offset) for part, offset in rows}

    def schemas(self) -> list[SchemaRow]:
        rows = self._all("SELECT fingerprint, name, text, registered_at FROM schemas ORDER BY seq")
        return [SchemaRow(bytes(f), n, t, r) for f, n, t, r in rows]

    def quarantined(self, source: str | None = None) -> list[QuarantineRow]:
        where = " WHERE source = %s" if source is not None else ""
        columns = 'source, part, "offset", reason, digest, value'
        rows = self._all(
            f'SELECT {columns} FROM quarantine{where} ORDER BY source, part, "offset"',
            (source,) if source is not None else (),
        )
        return [QuarantineRow(s, p, o, r, bytes(d), None if v is None else bytes(v)) for s, p, o, r, d, v in rows]

    def chain_breaks(self, limit: int = 10) -> list[ChainBreak]:
        rows = self._all(
            """
            SELECT idx, subject, prev, expected FROM (
                SELECT idx, subject, prev,
                       coalesce(lag(leaf) OVER (PARTITION BY subject ORDER BY idx), %s) AS expected
                FROM entries
            ) AS chained
            WHERE prev <> expected ORDER BY idx LIMIT %s
            """,
            (bytes(32), limit),
        )
        return [ChainBreak(*r) for r in rows]

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._closed = True
            self._db.close()
            if self._reads is not None:
                self._reads.close()

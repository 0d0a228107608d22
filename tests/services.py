"""Real services for tests: a throwaway PostgreSQL server from Debian's packages.

``postgres_server`` (one per test process) runs initdb into a fresh temporary directory, starts the server on
127.0.0.1 with a free port and its socket inside that directory, and stops it at the end of the session.
``postgres_ledger`` gives each test a fresh database provisioned with a writer and an auditor role.

When the server binaries (or psycopg) are missing the tests skip, saying that ``make test`` installs them;
with ``CI=true`` they fail instead, so a CI run never passes by skipping its integrations.

``running_postgres`` is the same server as a context manager, for benchmarks.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = [
    "AUDITOR_ROLE",
    "WRITER_ROLE",
    "PostgresLedger",
    "ServiceUnavailable",
    "create_ledger_database",
    "drop_database",
    "find_postgres_bindir",
    "postgres_ledger",
    "postgres_ledger_template",
    "postgres_server",
    "running_postgres",
    "sql",
    "with_database",
]

WRITER_ROLE = "lineage_writer"
AUDITOR_ROLE = "lineage_auditor"
_SUPERUSER = "postgres"
_START_ATTEMPTS = 5
_READY_SECONDS = 30.0
_INSTALL_HINT = "`make test` installs it (scripts/install-services.sh)"


class ServiceUnavailable(RuntimeError):
    """A real service the tests need is not installed here."""


def find_postgres_bindir() -> Path | None:
    """The newest Debian PostgreSQL server's bin directory (/usr/lib/postgresql/<major>/bin), if any."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None

    def major(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/", path)
        return int(match.group(1)) if match else 0

    return Path(max(found, key=major)).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _admin_url(port: int, database: str = "postgres") -> str:
    return f"postgresql://{_SUPERUSER}@127.0.0.1:{port}/{database}"


def with_database(url: str, database: str, *, user: str | None = None) -> str:
    """``url`` pointing at another database (and, if given, as another role)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    return f"postgresql://{user or params.get('user', _SUPERUSER)}@{host}:{port}/{database}"


def sql(url: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection to ``url``; the rows it returns (if any)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description is not None else []


def _accepts_connections(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[str]:
    """A fresh PostgreSQL server on 127.0.0.1 for the duration of the block; yields its superuser URL.

    ``durable=False`` turns fsync off (a crash loses the server, which the tests throw away anyway);
    ``durable=True`` keeps the server's defaults, for benchmarks that compare with a durable SQLite.
    Raises ServiceUnavailable when psycopg or Debian's server binaries are missing.
    """
    if importlib.util.find_spec("psycopg") is None:
        raise ServiceUnavailable("psycopg is not installed (the [postgres] extra)")
    bindir = find_postgres_bindir()
    if bindir is None:
        raise ServiceUnavailable("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    root = Path(tempfile.mkdtemp(prefix="lineage-pg-"))
    # initdb and the server refuse to run as root: the cluster belongs to the postgres OS user
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", _SUPERUSER, "--"] if as_root else []
    data, sockets, log = root / "data", root / "run", root / "server.log"
    sockets.mkdir()
    if as_root:
        for path in (root, sockets):
            shutil.chown(path, _SUPERUSER, _SUPERUSER)
    pg_ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        subprocess.run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                _SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{sockets}'",
            "max_connections = 50",
        ]
        if not durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n".join(settings) + "\n")
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            start = subprocess.run(
                [*pg_ctl, "-l", str(log), "-w", "-t", str(int(_READY_SECONDS)), "-o", f"-p {port}", "start"],
                capture_output=True,
                text=True,
                check=False,
            )
            if start.returncode == 0:
                started = True
                break
            # another process took the port between our probe and the server's bind: try another one
            if not (log.exists() and "could not bind" in log.read_text(errors="replace")):
                break
        if not started:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {start.stdout}{start.stderr}{tail}")
        url = _admin_url(port)
        deadline = time.monotonic() + _READY_SECONDS
        while not _accepts_connections(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {port} did not accept connections in {_READY_SECONDS} s")
            time.sleep(0.05)
        yield url
    finally:
        if started:
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so a missing service fails the run")
    pytest.skip(reason if "make test" in reason else f"{reason}; {_INSTALL_HINT}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The superuser URL of a PostgreSQL server private to this test process (skip or fail if absent)."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(running_postgres())
        except ServiceUnavailable as e:
            _unavailable(str(e))
        yield url


@dataclass(frozen=True, slots=True)
class PostgresLedger:
    """A fresh, provisioned ledger database and a URL for each role that may reach it."""

    database: str
    owner_url: str
    """The superuser that ran provision and owns the tables."""
    writer_url: str
    auditor_url: str


def create_ledger_database(
    admin_url: str, database: str | None = None, *, template: str | None = None
) -> PostgresLedger:
    """Provision a new ledger database on the server at ``admin_url`` with the writer and auditor roles.

    With ``template`` (an already provisioned database) the new one starts as a file copy of it, several
    times faster than building the schema again; provision then only re-grants what a copy does not carry.
    """
    from lineage_ledger.store.postgres import provision

    name = database or f"ledger_{uuid.uuid4().hex[:12]}"
    if template is not None:
        strategy = " STRATEGY FILE_COPY" if int(sql(admin_url, "SHOW server_version_num")[0][0]) >= 150000 else ""
        sql(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
    provision(admin_url, name, WRITER_ROLE, AUDITOR_ROLE)
    return PostgresLedger(
        database=name,
        owner_url=with_database(admin_url, name),
        writer_url=with_database(admin_url, name, user=WRITER_ROLE),
        auditor_url=with_database(admin_url, name, user=AUDITOR_ROLE),
    )


def drop_database(admin_url: str, database: str) -> None:
    """Drop ``database``, disconnecting whoever is still in it."""
    sql(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_ledger_template(postgres_server: str) -> str:
    """A provisioned, empty ledger database that ``postgres_ledger`` copies."""
    return create_ledger_database(postgres_server, "ledger_template").database


@pytest.fixture
def postgres_ledger(postgres_server: str, postgres_ledger_template: str) -> Iterator[PostgresLedger]:
    """A database of its own for one test, provisioned with writer and auditor roles; dropped afterwards."""
    ledger = create_ledger_database(postgres_server, template=postgres_ledger_template)
    try:
        yield ledger
    finally:
        drop_database(postgres_server, ledger.database)

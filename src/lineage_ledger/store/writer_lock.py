"""One writer per ledger: the exclusive lock a store takes when it opens for writing.

Two processes appending to one ledger would each extend the log from their own view of its head, and the
result (two entries claiming one index, chains linked to the wrong predecessor, blocks over the wrong range)
can never be repaired: a ledger is append-only. So a store opened for writing holds a lock until it closes,
and a second writer is refused at once with the holder named. Readers never take it.

SQLite: ``flock`` on ``<database>.lock``, a file beside the database holding a small JSON description of the
holder (process id, host, command, since when). The kernel releases the lock when the holder's process ends,
however it ends, so a crash leaves no stale lock; the file itself stays and is rewritten by the next holder.
``flock`` is not reliable on network file systems: keep a SQLite ledger on a local disk. PostgreSQL holds a
session advisory lock instead (store/postgres.py), described with the same :class:`Holder`.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lineage_ledger.errors import LockedError, StoreError

__all__ = ["LOCK_SUFFIX", "FileWriterLock", "Holder", "locked_message"]

LOCK_SUFFIX: Final = ".lock"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a ledger's writer lock: enough for an operator to find the process."""

    pid: int
    host: str
    command: str
    since: str
    """RFC 3339 UTC, to the second."""

    @classmethod
    def this_process(cls) -> Holder:
        """This process, now. The command is the program and its first argument (``lineage serve``), never
        the rest of the command line, which may carry secrets."""
        program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
        words = [program, *(a for a in sys.argv[1:2] if not a.startswith("-"))]
        since = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        return cls(os.getpid(), socket.gethostname(), " ".join(words), since.isoformat().replace("+00:00", "Z"))

    def describe(self) -> str:
        """``process 123 (lineage serve) on host h since 2026-12-07T21:40:00Z``."""
        return f"process {self.pid} ({self.command}) on host {self.host} since {self.since}"


def locked_message(ledger: str, holder: str) -> str:
    """The refusal a second writer gets: who holds the ledger and how to write to it instead."""
    return (
        f"the ledger {ledger} is open for writing by {holder}; a ledger has one writer at a time. "
        "Wait for it to finish, or stop it; if it is `lineage serve`, send writes through its HTTP API "
        "(events: lineage emit --url URL; producer keys: POST /v1/keys; API keys: POST /v1/apikeys). "
        "Reading commands need no lock."
    )


class FileWriterLock:
    """An exclusive, non-blocking ``flock`` on a file (created with ``mode``, less the umask: it names the
    holder's host and process), released by :meth:`release` or when the process ends.

    :meth:`acquire` raises :class:`LockedError` naming the holder when another open file description (another
    process, or another store in this process) holds it.
    """

    def __init__(self, path: Path, ledger: str, mode: int = 0o600) -> None:
        self.path = path
        self._ledger = ledger
        self._mode = mode
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise LockedError (held elsewhere) / StoreError (the file cannot be opened)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self._mode)
        except OSError as e:
            raise StoreError(f"cannot open the writer lock {self.path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise LockedError(locked_message(self._ledger, holder)) from None
        except OSError as e:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {e.strerror}") from e
        try:
            text = json.dumps(_as_json(Holder.this_process())).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, text + b"\n", 0)
        except OSError:
            pass  # the lock is what counts; a holder we cannot describe is still the only writer
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases the flock), first clearing the description so
        that it never names a holder that has gone. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    @staticmethod
    def _holder(fd: int) -> str:
        """The holder's description. A holder writes it just after taking the lock, so an empty file, or one a
        holder that died left behind, is read again a few times (up to about half a second)."""
        for _ in range(25):
            holder = _read_holder(fd)
            if holder is not None:
                return holder.describe()
            time.sleep(0.02)
        return "another process (it has not described itself yet)"


def _read_holder(fd: int) -> Holder | None:
    """The description in the lock file, or None if there is none yet or it names a dead process of this host."""
    try:
        fields = json.loads(os.pread(fd, 4096, 0))
        holder = Holder(int(fields["pid"]), str(fields["host"]), str(fields["command"]), str(fields["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if holder.host == socket.gethostname():
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return None  # left by a holder that died; the new one has not written its own yet
        except PermissionError:
            pass  # alive, another user's
    return holder


def _as_json(holder: Holder) -> dict[str, object]:
    return {"pid": holder.pid, "host": holder.host, "command": holder.command, "since": holder.since}

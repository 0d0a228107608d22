"""The files of a SQLite ledger: who may read them, and whether this process can write them.

The database and its ``-wal`` and ``-shm`` files hold token fingerprints, user ids and resources, so a new
database is created ``0600`` (owner only) whatever the umask, and SQLite gives its ``-wal`` and ``-shm`` the
database's mode. ``?file_mode=0640`` in the ledger URL (or ``0660``) makes them readable (or writable) by the
files' group as well: put the ledger in a directory whose group is the readers' and has the setgid bit
(``chmod g+s``), so new files take that group. The mode applies to files created from then on; an existing
ledger keeps the mode it has (``chmod`` it and its ``-wal`` and ``-shm``).

A ledger opened for writing must be writable. SQLite would otherwise open it read-only without a word, fail
on the first write, and create a missing ``-shm`` with the read-only database's mode, which kept the ledger
unwritable after the database was made writable again. So opening refuses a read-only database (file
permissions, an immutable flag, a read-only filesystem) or directory before SQLite touches them, naming
it, and gives a ``-wal`` or ``-shm`` left read-only by an earlier opening the database's mode again.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final

from lineage_ledger.errors import InputError, StoreError

__all__ = ["DEFAULT_FILE_MODE", "FILE_MODES", "file_mode", "prepare_for_writing"]

DEFAULT_FILE_MODE: Final = 0o600
FILE_MODES: Final = (0o600, 0o640, 0o660)
"""The modes ``?file_mode=`` accepts: read and write for the owner, optionally read or read and write for the
group, never anything for others."""


def file_mode(query: dict[str, list[str]]) -> int:
    """The mode for new ledger files that a ledger URL's parsed query asks for (default 0600)."""
    texts = query.get("file_mode")
    if not texts:
        return DEFAULT_FILE_MODE
    text = texts[0]
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if mode not in FILE_MODES:
        allowed = ", ".join(f"{m:04o}" for m in FILE_MODES)
        raise InputError("ledger", f"file_mode={text} is not one of {allowed}")
    return mode


def prepare_for_writing(database: Path, mode: int) -> None:
    """Create ``database`` empty with ``mode`` if it does not exist; StoreError naming the file if it, or a
    ``-wal`` or ``-shm`` beside it that cannot be given its mode, is not writable by this process, or naming
    the directory if SQLite could not create them there."""
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        pass
    except OSError as e:
        raise StoreError(f"cannot create the ledger file {database}: {e.strerror}") from e
    else:
        try:
            os.fchmod(fd, mode)  # exactly, whatever the umask took away
        finally:
            os.close(fd)
    if not os.access(database, os.W_OK):
        raise StoreError(
            f"the ledger file {database} is read-only (its permissions, an immutable flag or a read-only "
            "filesystem); make it writable to write to it (reading needs no write access)"
        )
    sides = [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]
    directory = database.absolute().parent
    if not all(side.exists() for side in sides) and not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(
            f"the directory {directory} of the ledger is read-only: SQLite creates the ledger's -wal and "
            "-shm files there; make it writable to write to the ledger"
        )
    for side in sides:
        if not side.exists() or os.access(side, os.W_OK):
            continue
        with contextlib.suppress(OSError):  # not ours to change: refused below
            os.chmod(side, stat.S_IMODE(database.stat().st_mode))
        if not os.access(side, os.W_OK):
            raise StoreError(
                f"{side} is read-only while its database is writable; give it the database's owner and mode"
            )

"""A small tmpfs mounted for one test (root only, as CI runs): a disk that really fills up, or that really
turns read-only, under a ledger and a real server process."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@contextmanager
def tmpfs(where: Path, size: str, options: str = "mode=0755") -> Iterator[Path]:
    """A tmpfs of ``size`` (as mount's size= option says it) mounted at ``where`` until the block ends."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},{options}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)  # a process still holds a file


def remount(where: Path, *, read_only: bool) -> None:
    """Remount the tmpfs at ``where`` read-only or read-write (what it holds stays)."""
    subprocess.run(["mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(where)], check=True)


def fill(path: Path) -> int:
    """Write ``path`` until its filesystem has no byte left; the number of bytes written."""
    written = 0
    with path.open("wb", buffering=0) as sink:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += sink.write(block) or 0
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return written

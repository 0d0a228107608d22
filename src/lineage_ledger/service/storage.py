"""Whether the ledger's storage has room to write: what readiness reports after a write found the disk full.

A write that finds no space left fails with StorageFullError (503 with Retry-After; nothing was written) and
marks the storage full. While it is marked, ``/readyz`` answers 503 too, so a load balancer sends producers
elsewhere; every check looks again, and the mark goes as soon as the database's filesystem has
``min_free_bytes`` free (or, for a store with no local file, after the Retry-After delay, so that a write
can find out), or a write succeeds. No restart is needed: nothing of the failed write was kept.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from lineage_ledger.errors import StorageFullError
from lineage_ledger.store.sqlite import sqlite_path_from_url

__all__ = ["DEFAULT_MIN_FREE_BYTES", "StorageWatch"]

DEFAULT_MIN_FREE_BYTES: Final = 16 * 1024 * 1024
"""Free space at which a full disk counts as having room again: a few batches' worth of WAL frames."""

log = logging.getLogger("lineage_ledger.service")


class StorageWatch:
    """The storage-full mark of one ledger: set by a failed write, cleared once space returns."""

    def __init__(
        self,
        store_url: str,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        base = store_url.split("?", 1)[0]
        local = "://" not in base or base.startswith("sqlite:///")
        path = sqlite_path_from_url(base) if local else ":memory:"
        self._directory = None if path == ":memory:" else Path(path).absolute().parent
        self._min_free = min_free_bytes
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._full: StorageFullError | None = None
        self._since = 0.0

    def failed(self, error: StorageFullError) -> None:
        """A write found no space (logged once, when the storage turns full)."""
        with self._lock:
            if self._full is None:
                log.warning("the ledger's storage is full; writes get 503 until space returns: %s", error)
                self._since = self._monotonic()
            self._full = error

    def succeeded(self) -> None:
        """A write landed: there is room."""
        with self._lock:
            self._clear("a write succeeded")

    def check(self) -> None:
        """Raise the last StorageFullError while the storage is still full; clear the mark once it is not."""
        with self._lock:
            full = self._full
            if full is None:
                return
            if self._directory is not None:
                free = shutil.disk_usage(self._directory).free
                if free >= self._min_free:
                    self._clear(f"{free} bytes free")
                    return
            elif self._monotonic() - self._since >= full.retry_after:
                self._clear("the retry delay passed")
                return
            raise StorageFullError(str(full), full.retry_after)

    def _clear(self, why: str) -> None:
        if self._full is not None:
            log.info("the ledger's storage has room again (%s)", why)
            self._full = None

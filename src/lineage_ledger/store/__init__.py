"""Storage backends behind one contract (store.base.Store), chosen by a ledger URL."""

from __future__ import annotations

from lineage_ledger.errors import InputError
from lineage_ledger.store.base import Store

__all__ = ["open_store"]


def open_store(url: str, *, readonly: bool = False) -> Store:
    """Open the store a URL names: a path or ``sqlite:///path`` (the embedded default)."""
    if url.startswith(("postgresql://", "postgres://")):
        raise InputError("ledger", "the PostgreSQL store is not available in this version")
    from lineage_ledger.store.sqlite import SQLiteStore

    return SQLiteStore(url, readonly=readonly)

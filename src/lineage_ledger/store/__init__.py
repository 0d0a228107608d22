"""Storage backends behind one contract (store.base.Store), chosen by a ledger URL."""

from __future__ import annotations

from lineage_ledger.errors import StoreError
from lineage_ledger.store.base import Store

__all__ = ["open_store"]


def open_store(url: str, *, readonly: bool = False) -> Store:
    """Open the store a URL names.

    A path or ``sqlite:///path`` is the embedded default; ``postgresql://...`` or ``postgres://...`` (a libpq
    URL) is the PostgreSQL store, which needs the ``[postgres]`` extra.
    """
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from lineage_ledger.store.postgres import PostgresStore
        except ModuleNotFoundError as e:
            if e.name is None or not e.name.startswith("psycopg"):
                raise
            raise StoreError("the PostgreSQL store needs psycopg: pip install 'lineage-ledger[postgres]'") from e
        return _tiered(PostgresStore(url, readonly=readonly))
    from lineage_ledger.store.sqlite import SQLiteStore

    return _tiered(SQLiteStore(url, readonly=readonly))


def _tiered(store: Store) -> Store:
    """``store`` itself, or, once its ledger has archived ranges, the hot store and the archive read as one
    (lineage_ledger.archive.tiered; needs the ``[archive]`` extra only when an archive file is read)."""
    try:
        if not store.archives():
            return store
        from lineage_ledger.archive.tiered import TieredStore

        return TieredStore(store)
    except BaseException:
        store.close()
        raise

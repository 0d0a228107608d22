"""Reading a sealing ledger: user ids looked up by fingerprint, and sealed events shown with their personal
fields decrypted, or as ``"erased"`` once the subject's key is destroyed (never missing, never an error).

One reader per open store, opened from the ledger's settings the first time a query needs it (the store's
URL says where its privacy keys and key store are, privacy.keys and privacy.keystore).
"""

from __future__ import annotations

import threading
import weakref
from typing import Final

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.sealed import personal_of, unseal_event
from lineage_ledger.errors import LedgerError
from lineage_ledger.privacy.personal import PersonalData, fields_from_meta
from lineage_ledger.store.base import Store

__all__ = ["PersonalReader", "personal_reader"]


class PersonalReader:
    """Fingerprints and opens personal fields for the queries of one ledger."""

    def __init__(self, personal: PersonalData) -> None:
        self.personal = personal

    def user_key(self, user_id: str) -> str:
        """The key the ledger's links hold for a user: its keyed fingerprint."""
        return self.personal.user_fingerprint(user_id)

    def shown(self, event: bytes, chain_subject: str, event_id: str) -> bytes:
        """The bytes of a stored event to show: a sealed event with its personal fields back in the payload,
        decrypted, or ``"erased"`` when the key is destroyed; any other event as it is."""
        sealed = personal_of(event)
        if sealed is None:
            return event
        try:
            fields = self.personal.open_fields(sealed, chain_subject, event_id)
        except LedgerError:
            fields = None  # a key that does not open this entry: nothing readable is left of the fields
        return canonical_bytes(unseal_event(event, fields))


_READERS: Final[weakref.WeakKeyDictionary[Store, PersonalReader | None]] = weakref.WeakKeyDictionary()
_LOCK: Final = threading.Lock()


def personal_reader(store: Store) -> PersonalReader | None:
    """The reader of ``store``'s ledger, or None for a ledger that seals nothing."""
    with _LOCK:
        if store in _READERS:
            return _READERS[store]
        meta = store.meta()
        reader = None
        if fields_from_meta(meta) is not None:
            personal = PersonalData.open(store.url, meta["origin"], meta)
            reader = PersonalReader(personal) if personal is not None else None
            if personal is not None:
                weakref.finalize(store, personal.close)
        _READERS[store] = reader
        return reader

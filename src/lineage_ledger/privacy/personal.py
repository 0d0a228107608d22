"""The ledger's side of personal data: sealing events at ingest under their data subject's key, and
opening them again for whoever may read them.

The data subject of an event is the person its ``payload.user_id`` names (``user:<user id>``); an event
with personal fields and no user id is sealed under a key of its own chain subject (``token:<id>``,
``asset:<id>``), so its personal fields are still encrypted and erasable with that subject. A subject's
key is created, wrapped and durably stored in the key store before the first entry sealed under it is
committed, and is looked up by (fingerprint, key id) afterwards.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.model import Event, TokenEvent, subject_of
from lineage_ledger.core.sealed import (
    DEFAULT_PERSONAL_FIELDS,
    Personal,
    associated_data,
    claims_personal,
    open_personal,
    seal_event,
    subject_fingerprint,
)
from lineage_ledger.core.transport_seal import TRANSPORT_MARKER, ingest_public_key, open_for_ledger
from lineage_ledger.errors import InputError
from lineage_ledger.privacy.keys import PrivacyKeys, load_privacy_keys, privacy_keys_path
from lineage_ledger.privacy.keystore import KeyRow, SubjectKeyStore, open_key_store

__all__ = ["PRIVACY_META", "PersonalData", "data_subject_name", "fields_from_meta", "personal_data_meta"]

PRIVACY_META: Final = "personal_fields"
"""The ledger setting (written at creation) that turns sealing on: the payload fields sealed, comma-separated."""


def fields_from_meta(meta: dict[str, str]) -> tuple[str, ...] | None:
    """The personal fields a ledger seals, or None for a ledger that seals nothing."""
    text = meta.get(PRIVACY_META)
    return tuple(sorted(f for f in text.split(",") if f)) if text else None


def data_subject_name(event: Event, chain_subject: str) -> str:
    """Whose personal data an event holds: ``user:<payload.user_id>``, else its chain subject."""
    user = getattr(event.payload, "user_id", None) if type(event) is TokenEvent else None
    return "user:" + user if type(user) is str else chain_subject


class PersonalData:
    """Seals and opens the personal fields of one ledger's events."""

    def __init__(
        self,
        origin: str,
        keys: PrivacyKeys,
        key_store: SubjectKeyStore,
        fields: Sequence[str] = DEFAULT_PERSONAL_FIELDS,
        *,
        cache_size: int = 100_000,
    ) -> None:
        self.origin = origin
        self.fields = tuple(fields)
        self.key_store = key_store
        self._keys = keys
        self._cache: OrderedDict[str, tuple[str, AESGCM]] = OrderedDict()  # fingerprint -> (kid, its AEAD)
        self._names: dict[str, str] = {}  # data subject name -> fingerprint
        self._cache_size = cache_size
        self._new: list[KeyRow] = []
        self._needles = tuple(f'"{name}":'.encode() for name in self.fields)

    @classmethod
    def open(cls, ledger_url: str, origin: str, meta: dict[str, str]) -> PersonalData | None:
        """The sealing of the ledger at ``ledger_url`` (None if its settings seal nothing): its privacy keys
        (privacy.keys.privacy_keys_path) and its key store."""
        fields = fields_from_meta(meta)
        if fields is None:
            return None
        keys = load_privacy_keys(privacy_keys_path(ledger_url))
        return cls(origin, keys, open_key_store(ledger_url), fields)

    def close(self) -> None:
        """Close the key store."""
        self.key_store.close()

    def fingerprint(self, name: str) -> str:
        """The keyed fingerprint of data subject ``name`` (``user:<id>`` for a person)."""
        return subject_fingerprint(self._keys.subject_secret, name)

    def user_fingerprint(self, user_id: str) -> str:
        """The keyed fingerprint of the person with this user id."""
        return self.fingerprint("user:" + user_id)

    def prepare(self, events: Iterable[tuple[bytes, Event]]) -> None:
        """Make sure the keys of the data subjects of these (received bytes, event) pairs that hold personal
        fields are in memory and durably stored: those stored already come in one round trip, new ones are
        created and stored together. Called as a batch is checked, so that this write overlaps the commit of
        the batch before it rather than waiting in the sequencer."""
        self.prefetch(
            (event, subject_of(event))
            for raw, event in events
            if TRANSPORT_MARKER in raw or any(name in raw for name in self._needles)
        )
        self.store_new_keys()

    def prefetch(self, events: Iterable[tuple[Event, str]]) -> None:
        """Look up, in one round trip, the keys of the data subjects of these (event, chain subject) pairs
        that are not in memory yet (a batch's worth, before sealing them one by one)."""
        wanted = {
            fp
            for event, chain in events
            if (fp := self._fingerprint_of(data_subject_name(event, chain))) not in self._cache
        }
        if not wanted:
            return
        found: dict[str, KeyRow] = {}
        for row in self.key_store.keys_of_many(sorted(wanted)):
            if not row.erasing:
                found[row.fingerprint] = row  # at most one: a new key is made only when none is usable
        for fp in wanted:
            self._current_key(fp, found.get(fp, _NO_KEY))

    def _current_key(self, fingerprint: str, known: KeyRow | None = None) -> tuple[str, AESGCM]:
        got = self._cache.get(fingerprint)
        if got is not None:
            self._cache.move_to_end(fingerprint)
            return got
        if known is None:
            usable = [row for row in self.key_store.keys_of(fingerprint) if not row.erasing]
            known = usable[-1] if usable else _NO_KEY
        if known is not _NO_KEY:
            row = known
            key = self._keys.wrapper.unwrap(row.wrapped, _context(fingerprint, row.kid))
            got = (row.kid, AESGCM(key))
        else:
            kid = secrets.token_hex(16)
            key = secrets.token_bytes(32)
            self._new.append(KeyRow(fingerprint, kid, self._keys.wrapper.wrap(key, _context(fingerprint, kid))))
            got = (kid, AESGCM(key))
        self._cache[fingerprint] = got
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return got

    def _fingerprint_of(self, name: str) -> str:
        fingerprint = self._names.get(name)
        if fingerprint is None:
            fingerprint = self._names[name] = self.fingerprint(name)
            if len(self._names) > self._cache_size:
                self._names.pop(next(iter(self._names)))
        return fingerprint

    def received(self, raw: bytes, field: str) -> bytes:
        """The producer's plaintext event of received bytes ``raw`` (transport-sealed or not) for checking.
        InputError for an event that carries the ledger's own ``personal`` field or does not open."""
        if claims_personal(raw):
            raise InputError(f"{field}.personal", "is reserved for the fields the ledger seals")
        plain = open_for_ledger(raw, self._keys.ingest_key, field=field)
        return raw if plain is None else plain

    def ingest_public_key(self) -> bytes | None:
        """The X25519 public key producers seal personal fields to (core.transport_seal), if there is one."""
        key = self._keys.ingest_key
        return None if key is None else ingest_public_key(key)

    def seal(self, raw: bytes, event: Event, chain_subject: str) -> tuple[bytes, Personal] | None:
        """The sealed bytes of event ``raw`` to store in its entry and their ``personal`` field, or None when
        it holds no personal field.
        ``raw`` is what the producer signed: its plaintext, or its fields sealed to the ingest key. A key
        created here is stored by ``store_new_keys``, which the caller runs before committing."""
        plain = open_for_ledger(raw, self._keys.ingest_key)
        if plain is not None:
            sealed = self._seal(plain, event, chain_subject, leaf_hash(raw), transport=True)
            if sealed is None:
                raise InputError("event.sealed_for_ledger", "seals no field this ledger keeps as personal")
            return sealed
        if not any(name in raw for name in self._needles):  # cheap: most events without any are skipped here
            return None
        return self._seal(raw, event, chain_subject, leaf_hash(raw), transport=False)

    def _seal(
        self, raw: bytes, event: Event, chain_subject: str, signed: bytes, *, transport: bool
    ) -> tuple[bytes, Personal] | None:
        fingerprint = self._fingerprint_of(data_subject_name(event, chain_subject))
        kid, key = self._current_key(fingerprint)
        return seal_event(
            raw,
            self.fields,
            key=key,
            kid=kid,
            subject_fp=fingerprint,
            aad=associated_data(self.origin, chain_subject, event.event_id),
            signed_leaf=signed,
            transport=transport,
        )

    def store_new_keys(self) -> None:
        """Durably store the keys created since the last call (before any entry sealed under them commits)."""
        if self._new:
            self.key_store.add(self._new)
            self._new = []

    def discard_new_keys(self) -> None:
        """Forget keys created for a write that failed (they seal nothing durable)."""
        for row in self._new:
            self._cache.pop(row.fingerprint, None)
        self._new = []

    def forget(self, fingerprint: str) -> None:
        """Drop a subject's key from memory (its erasure has begun)."""
        self._cache.pop(fingerprint, None)

    def open_fields(self, personal: Personal, chain_subject: str, event_id: str) -> dict[str, Any] | None:
        """The personal fields of a sealed event, or None when its key is destroyed."""
        row = self.key_store.get(personal.subject, personal.kid)
        if row is None:
            return None
        key = self._keys.wrapper.unwrap(row.wrapped, _context(personal.subject, personal.kid))
        return open_personal(personal, key, associated_data(self.origin, chain_subject, event_id))


_NO_KEY: Final = KeyRow("", "", b"")
"""A subject known to have no usable key."""


def _context(fingerprint: str, kid: str) -> bytes:
    return f"lineage-ledger/subject-key/v1\n{fingerprint}\n{kid}".encode()


def personal_data_meta(ledger_url: str, fields: Sequence[str] = DEFAULT_PERSONAL_FIELDS) -> dict[str, str]:
    """For a ledger about to be created with sealing on: its privacy key file (created 0600 if absent, at
    privacy.keys.privacy_keys_path) and the setting to record with it."""
    from lineage_ledger.privacy.keys import create_privacy_keys

    path = privacy_keys_path(ledger_url)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        create_privacy_keys(path)
    names = sorted(set(fields))
    if not names or any(not n or "," in n for n in names):
        raise InputError("personal_fields", "name one or more payload fields, without commas")
    return {PRIVACY_META: ",".join(names)}

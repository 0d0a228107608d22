"""Tests for lineage_ledger.ledger.keyring: a key signs only for its producer, inside its window, until revoked."""

from __future__ import annotations

from typing import Final

import pytest

from lineage_ledger.core.entry import KeyChange
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.errors import ConflictError, KeyringError
from lineage_ledger.ledger.keyring import Keyring, ProducerKey

PRODUCER: Final = "auth-svc"
PUBLIC_1: Final = bytes(range(32))
PUBLIC_2: Final = bytes(range(32, 64))


def at(seconds: int, counter: int = 0) -> str:
    return format_reading(1_763_891_000_000_000_000 + seconds * 1_000_000_000, counter)


def register(
    key_id: str,
    valid_from: str,
    *,
    producer: str = PRODUCER,
    public_key: bytes = PUBLIC_1,
    valid_until: str | None = None,
) -> KeyChange:
    return KeyChange(
        action="register",
        producer=producer,
        key_id=key_id,
        public_key=public_key.hex(),
        valid_from=valid_from,
        valid_until=valid_until,
    )


def revoke(key_id: str, revoked_at: str, *, producer: str = PRODUCER, public_key: bytes = PUBLIC_1) -> KeyChange:
    return KeyChange(
        action="revoke",
        producer=producer,
        key_id=key_id,
        public_key=public_key.hex(),
        valid_from=at(0),
        revoked_at=revoked_at,
    )


class TestRegister:
    def test_register_and_get(self) -> None:
        ring = Keyring([register("k1", at(100))])
        key = ring.get("k1")
        assert key == ProducerKey(producer=PRODUCER, key_id="k1", public_key=PUBLIC_1, valid_from=at(100))
        assert ring.signing_key("k1", PRODUCER, at(100)) == key
        assert ring.signing_key("k1", PRODUCER, at(10**6)) == key
        assert ring.producer_keys() == [key]

    def test_apply_is_the_same_as_the_constructor(self) -> None:
        ring = Keyring()
        ring.apply(register("k1", at(100)))
        assert ring.producer_keys() == Keyring([register("k1", at(100))]).producer_keys()

    def test_unknown_key(self) -> None:
        ring = Keyring([register("k1", at(100))])
        with pytest.raises(KeyringError):
            ring.get("k2")
        with pytest.raises(KeyringError):
            ring.signing_key("k2", PRODUCER, at(200))

    def test_registering_an_id_twice_conflicts(self) -> None:
        ring = Keyring([register("k1", at(100))])
        with pytest.raises(ConflictError):
            ring.apply(register("k1", at(200), public_key=PUBLIC_2))
        with pytest.raises(ConflictError):
            ring.apply(register("k1", at(100)))
        assert ring.get("k1").public_key == PUBLIC_1

    def test_wrong_producer(self) -> None:
        ring = Keyring([register("k1", at(100)), register("b1", at(100), producer="billing", public_key=PUBLIC_2)])
        with pytest.raises(KeyringError):
            ring.signing_key("k1", "billing", at(200))
        with pytest.raises(KeyringError):
            ring.signing_key("b1", PRODUCER, at(200))
        assert ring.signing_key("b1", "billing", at(200)).public_key == PUBLIC_2

    def test_before_valid_from(self) -> None:
        ring = Keyring([register("k1", at(100))])
        with pytest.raises(KeyringError):
            ring.signing_key("k1", PRODUCER, at(99))
        with pytest.raises(KeyringError):
            ring.signing_key("k1", PRODUCER, format_reading(int(at(100)[:19]) - 1, 99_999))
        assert ring.signing_key("k1", PRODUCER, at(100)).key_id == "k1"

    def test_after_valid_until(self) -> None:
        ring = Keyring([register("k1", at(100), valid_until=at(200))])
        assert ring.signing_key("k1", PRODUCER, at(199, 99_999)).key_id == "k1"
        with pytest.raises(KeyringError):
            ring.signing_key("k1", PRODUCER, at(200))
        with pytest.raises(KeyringError):
            ring.signing_key("k1", PRODUCER, at(300))
        assert ring.get("k1").valid_until == at(200)


class TestRevoke:
    def test_revoked_key_signs_nothing_from_then_on(self) -> None:
        ring = Keyring([register("k1", at(100)), revoke("k1", at(150))])
        assert ring.signing_key("k1", PRODUCER, at(149)).key_id == "k1"  # history it signed stays valid
        with pytest.raises(KeyringError):
            ring.signing_key("k1", PRODUCER, at(150))
        with pytest.raises(KeyringError):
            ring.signing_key("k1", PRODUCER, at(10**6))
        key = ring.get("k1")
        assert key.revoked_at == at(150)
        assert key.public_key == PUBLIC_1
        assert key.valid_from == at(100)
        assert not key.usable_at(at(150))
        assert key.usable_at(at(149))

    def test_revoke_keeps_the_window_it_was_registered_with(self) -> None:
        ring = Keyring([register("k1", at(100), valid_until=at(300)), revoke("k1", at(200))])
        key = ring.get("k1")
        assert (key.valid_from, key.valid_until, key.revoked_at) == (at(100), at(300), at(200))

    def test_revoke_unknown_key(self) -> None:
        with pytest.raises(KeyringError):
            Keyring([revoke("k1", at(150))])

    def test_revoke_by_another_producer(self) -> None:
        ring = Keyring([register("k1", at(100))])
        with pytest.raises(KeyringError):
            ring.apply(revoke("k1", at(150), producer="billing"))
        assert ring.get("k1").revoked_at is None

    def test_revoking_twice_conflicts(self) -> None:
        ring = Keyring([register("k1", at(100)), revoke("k1", at(150))])
        with pytest.raises(ConflictError):
            ring.apply(revoke("k1", at(120)))
        assert ring.get("k1").revoked_at == at(150)


class TestRotation:
    def test_new_key_from_a_later_time_old_key_still_gettable(self) -> None:
        ring = Keyring(
            [
                register("k1", at(100)),
                register("k2", at(200), public_key=PUBLIC_2),
                revoke("k1", at(200)),
            ]
        )
        # before the rotation: only the old key signs
        assert ring.signing_key("k1", PRODUCER, at(199)).public_key == PUBLIC_1
        with pytest.raises(KeyringError):
            ring.signing_key("k2", PRODUCER, at(199))
        # after: only the new key signs
        assert ring.signing_key("k2", PRODUCER, at(200)).public_key == PUBLIC_2
        with pytest.raises(KeyringError):
            ring.signing_key("k1", PRODUCER, at(200))
        # the old key stays known, so what it signed earlier can still be checked
        old = ring.get("k1")
        assert old.public_key == PUBLIC_1
        assert old.revoked_at == at(200)
        assert [k.key_id for k in ring.producer_keys()] == ["k1", "k2"]

    def test_rotation_by_validity_windows(self) -> None:
        ring = Keyring(
            [
                register("k1", at(100), valid_until=at(200)),
                register("k2", at(200), public_key=PUBLIC_2),
            ]
        )
        assert ring.signing_key("k1", PRODUCER, at(150)).key_id == "k1"
        with pytest.raises(KeyringError):
            ring.signing_key("k1", PRODUCER, at(250))
        assert ring.signing_key("k2", PRODUCER, at(250)).key_id == "k2"
        assert ring.get("k1").public_key == PUBLIC_1


class TestMalformedChanges:
    """Key entries a verifier replays from a log it does not trust: ones no ledger writes are refused."""

    def test_a_revocation_must_say_when(self) -> None:
        ring = Keyring([register("k1", at(0))])
        change = KeyChange(action="revoke", producer=PRODUCER, key_id="k1", public_key=PUBLIC_1.hex(), valid_from=at(0))
        with pytest.raises(KeyringError, match="revoked_at is missing"):
            ring.apply(change)
        assert ring.get("k1").revoked_at is None

    def test_a_revocation_must_name_the_registered_public_key(self) -> None:
        ring = Keyring([register("k1", at(0))])
        with pytest.raises(KeyringError, match="another public key"):
            ring.apply(revoke("k1", at(5), public_key=PUBLIC_2))
        assert ring.signing_key("k1", PRODUCER, at(10)).revoked_at is None

    def test_a_registration_cannot_carry_a_revocation(self) -> None:
        change = KeyChange(
            action="register",
            producer=PRODUCER,
            key_id="k1",
            public_key=PUBLIC_1.hex(),
            valid_from=at(0),
            revoked_at=at(1),
        )
        with pytest.raises(KeyringError, match="carries revoked_at"):
            Keyring([change])

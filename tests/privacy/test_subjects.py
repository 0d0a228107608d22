"""A person's events sealed at ingest, exported with evidence, erased; every proof still verifies. On the
embedded default and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.entry import EventEntry, decode_entry
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.transport_seal import seal_for_ledger
from lineage_ledger.errors import InputError, NotFoundError
from lineage_ledger.ledger.holdings import tokens_of_user
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.offline_set import verify_evidence_set
from lineage_ledger.privacy.backup import read_backup, restore_keys, write_backup
from lineage_ledger.privacy.subjects import erase_subject, export_subject, subject_evidence
from lineage_ledger.store import open_store
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, SETTINGS, make_log_signer, make_producer_signer
from tests.privacy.helpers import ALICE, BOB, Sealing, ingest, people_events, sealing_ledger


def _stored_events(ledger: Ledger) -> list[bytes]:
    out = []
    for row in ledger.store.entries(0, ledger.size):
        entry = decode_entry(row.body)
        if isinstance(entry, EventEntry):
            out.append(bytes(entry.event))
    return out


def test_personal_fields_are_stored_only_as_ciphertext_and_the_ledger_verifies(sealing: Sealing) -> None:
    events = people_events()
    with sealing_ledger(sealing) as ledger:
        ingest(ledger, events)
        stored = b"".join(_stored_events(ledger))
        verifier = ledger.verifier
    for value in (*ALICE.values(), *BOB.values()):
        assert value.encode() not in stored
    assert stored.count(b'"personal":{"alg":"AES-256-GCM"') == len(events)
    assert verify_ledger(sealing.url, verifier=verifier, workers=1).ok


def test_export_decrypts_exactly_what_the_producer_signed_with_evidence(sealing: Sealing) -> None:
    events = people_events()
    alice_sent = {json.loads(e)["event_id"]: e for e in events if ALICE["user_id"].encode() in e}
    with sealing_ledger(sealing) as ledger:
        ingest(ledger, events)
        export = export_subject(ledger.store, ledger.personal, "user:" + ALICE["user_id"])
        evidence = subject_evidence(ledger.store, export)
        log_key = str(ledger.verifier)
    assert len(export.events) == len(alice_sent) == 8
    for item in export.events:
        sent = alice_sent[item["event"]["event_id"]]
        assert canonical_bytes(item["event"]) == sent  # the producer's own bytes, decrypted
        assert item["signed_event_matches"] is True
    assert export.subjects == sorted({item["subject"] for item in export.events})
    assert len(export.subjects) == 2  # alice's two tokens, not bob's
    report = verify_evidence_set(evidence, log_key=log_key)
    assert report.ok, report.problems
    assert len(report.members) == 2


def test_queries_by_user_use_the_fingerprint_and_show_fields_then_erased(sealing: Sealing) -> None:
    with sealing_ledger(sealing) as ledger:
        ingest(ledger, people_events())
        links = [row for row in ledger.store.link_rows() if row[0] == "user"]
        assert links
        assert all(ALICE["user_id"] not in row[1] and BOB["user_id"] not in row[1] for row in links)
        held = tokens_of_user(Lineage(ledger.store), ALICE["user_id"])
        assert [t.user_id for t in held.tokens] == [ALICE["user_id"]] * 2
        erase_subject(ledger, "user:" + ALICE["user_id"], "Art. 17 request 2026-118")
    store = open_store(sealing.url, readonly=True)
    try:
        held = tokens_of_user(Lineage(store), ALICE["user_id"])
        assert [t.user_id for t in held.tokens] == ["erased", "erased"]
        bob = tokens_of_user(Lineage(store), BOB["user_id"])
        assert [t.user_id for t in bob.tokens] == [BOB["user_id"]]
        timeline = Lineage(store).records(store.subject_entries(["token:" + held.tokens[0].token_id]))
        assert {r.event.payload.ip for r in timeline if r.event.event_type == "USED"} == {"erased"}
    finally:
        store.close()


def test_erasure_keeps_every_proof_and_leaves_only_the_record(sealing: Sealing) -> None:
    with sealing_ledger(sealing) as ledger:
        ingest(ledger, people_events())
        before = export_subject(ledger.store, ledger.personal, "user:" + ALICE["user_id"])
        evidence = subject_evidence(ledger.store, before)
        log_key = str(ledger.verifier)
        size_before = ledger.size
        record = erase_subject(ledger, "user:" + ALICE["user_id"], "Art. 17 request 2026-118")
        assert not record.already
        assert record.count == 8
        assert record.index >= size_before
        entry_bytes = ledger.store.entry(record.index).body
        assert ALICE["user_id"].encode() not in entry_bytes
        assert b"Art. 17 request 2026-118" in entry_bytes
        again = erase_subject(ledger, "user:" + ALICE["user_id"], "asked twice")
        assert again.already
        assert again.index == record.index
        after = export_subject(ledger.store, ledger.personal, "user:" + ALICE["user_id"])
        assert after.events == []
        assert [r.index for r in after.erasures] == [record.index]
        assert len(export_subject(ledger.store, ledger.personal, "user:" + BOB["user_id"]).events) == 4
        verifier = ledger.verifier
    assert verify_ledger(sealing.url, verifier=verifier, workers=1).ok
    assert verify_evidence_set(evidence, log_key=log_key).ok  # a bundle taken before still verifies offline


def test_bad_input_is_named(sealing: Sealing) -> None:
    with sealing_ledger(sealing) as ledger:
        ingest(ledger, people_events())
        with pytest.raises(NotFoundError, match="no personal data"):
            erase_subject(ledger, "user:nobody", "r")
        with pytest.raises(NotFoundError, match="no personal data"):
            export_subject(ledger.store, ledger.personal, "user:nobody")
        with pytest.raises(InputError, match="reason"):
            erase_subject(ledger, "user:" + ALICE["user_id"], " ")
        assert len(export_subject(ledger.store, ledger.personal, "user:" + ALICE["user_id"]).events) == 8


def test_a_restored_backup_never_brings_back_an_erased_key(sealing: Sealing) -> None:
    with sealing_ledger(sealing) as ledger:
        ingest(ledger, people_events())
        personal = ledger.personal
        assert personal is not None
        backup, count = write_backup(personal.key_store, ledger.origin)
        assert count == 2
        assert ALICE["user_id"].encode() not in backup
        erase_subject(ledger, "user:" + ALICE["user_id"], "Art. 17")
        restored, refused = restore_keys(ledger.store, personal, read_backup(backup))
        assert (restored, refused) == (1, 1)
        assert export_subject(ledger.store, personal, "user:" + ALICE["user_id"]).events == []
        with pytest.raises(InputError, match="truncated"):
            read_backup(backup.rsplit(b"\n", 2)[0] + b"\n")


def test_a_retried_batch_is_answered_as_duplicates_and_reserved_fields_are_refused(sealing: Sealing) -> None:
    events = people_events()[:4]
    envelope = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    with sealing_ledger(sealing) as ledger:
        first = ledger.append(envelope).receipts
        again = ledger.append(envelope).receipts
        assert [r.duplicate for r in again] == [True] * 4
        assert [r.index for r in again] == [r.index for r in first]
        size = ledger.size
        claimed = json.loads(events[0])
        claimed["event_id"] = "01900000-0000-7000-8000-000000000001"
        claimed["personal"] = {"alg": "none"}
        bad = seal_batch(
            [canonical_bytes(claimed)], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer()
        )
        with pytest.raises(InputError, match="reserved"):
            ledger.append(bad)
        assert ledger.size == size
        nested = json.loads(events[1])  # the name is only reserved at the top: a field deeper in is data
        nested["event_id"] = "01900000-0000-7000-8000-000000000002"
        nested["context"] = {"personal": {"alg": "n/a"}}
        fine = seal_batch(
            [canonical_bytes(nested)], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer()
        )
        assert ledger.append(fine).receipts[0].verdict == "ok"
        ledger.seal()
        verifier = ledger.verifier
    assert verify_ledger(sealing.url, verifier=verifier, workers=1).ok


def test_fields_sealed_for_the_ledger_are_refused_by_a_ledger_that_seals_nothing(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    public = X25519PrivateKey.generate().public_key().public_bytes_raw()
    sent = seal_for_ledger(people_events()[0], ("ip", "user_agent", "user_id"), public)
    envelope = seal_batch([sent], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    with Ledger.create(str(tmp_path / "plain.db"), make_log_signer(), settings=SETTINGS) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
        with pytest.raises(InputError, match="no ingest key"):
            ledger.append(envelope)
        assert ledger.size == 1


def test_an_event_too_large_once_sealed_is_refused_whole(tmp_path: Path) -> None:
    big = json.loads(people_events()[0])
    big["payload"]["user_agent"] = "A" * 4000
    big["note"] = ""
    big["note"] = "n" * (64_000 - len(canonical_bytes(big)))  # fits as sent; its sealed fields are a third larger
    raw = canonical_bytes(big)
    assert len(raw) == 64_000
    envelope = seal_batch([raw], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    with sealing_ledger(Sealing(str(tmp_path / "big.db"), tmp_path / "big.db.privacy")) as ledger:
        size = ledger.size
        with pytest.raises(InputError, match="sealed, the event is"):
            ledger.append(envelope)
        assert ledger.size == size

"""The log published as C2SP tlog-tiles, read back by a client that trusts only the verifier key.

Every proof the client rebuilds from tiles must equal the one the ledger computes from its own store, and any
byte changed in a published tile or bundle must be caught, not believed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lineage_ledger.core.merkle import TiledNodeReader, consistency_proof, inclusion_proof
from lineage_ledger.core.note import Checkpoint, open_note, parse_verifier_key, verifier_key
from lineage_ledger.core.tiles import Tile, tiles_for_size
from lineage_ledger.errors import InconsistencyError, NotFoundError, RootMismatchError, VerificationError
from lineage_ledger.ledger.tiles import publish_tiles, read_tile
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import open_store
from lineage_ledger.tile_client import TileClient
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    BuiltLedger,
    append_in_batches,
    make_log_signer,
    make_producer_signer,
    token_events,
)

BIG_EVENTS = 66_000
"""Past 65,536 entries, so the tree has level-2 tiles (each hash over 65,536 leaves)."""


def _checkpoint(note: str, ledger: BuiltLedger) -> Checkpoint:
    return Checkpoint.from_text(open_note(note, [ledger.verifier])[0])


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.db"
    settings = LedgerSettings(block_size=20_000, block_seconds=1e9)
    with Ledger.create(str(path), make_log_signer(), settings=settings) as ledger:
        producer = make_producer_signer()
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, producer.public_key)
        append_in_batches(ledger, token_events(BIG_EVENTS, tokens=50), producer, batch_size=2000)
        ledger.seal()
    return path


def test_published_tiles_rebuild_the_ledgers_own_proofs(built_ledger: BuiltLedger, tmp_path: Path) -> None:
    site = tmp_path / "site"
    store = open_store(built_ledger.url, readonly=True)
    try:
        done = publish_tiles(store, site)
        assert done.size == built_ledger.size
        client = TileClient(site.as_uri(), built_ledger.verifier)
        latest = client.checkpoint().checkpoint
        assert latest.size == built_ledger.size
        assert client.root(latest.size, expected=latest.root_hash) == latest.root_hash
        assert client.audit(latest) == latest.size
        own = TiledNodeReader(store.nodes)
        for index in range(latest.size):
            body, proof = client.entry(index, latest)
            assert body == store.entry(index).body
            assert proof == inclusion_proof(index, latest.size, own)
        for row in store.checkpoints():  # every signed size the ledger kept, against the latest
            old = _checkpoint(row.note, built_ledger)
            assert client.consistency(old, latest) == (
                consistency_proof(old.size, latest.size, own) if 0 < old.size < latest.size else []
            )
    finally:
        store.close()


def test_publishing_again_keeps_full_tiles_and_adds_the_new_ones(built_ledger: BuiltLedger, tmp_path: Path) -> None:
    site = tmp_path / "site"
    store = open_store(built_ledger.url, readonly=True)
    try:
        rows = store.checkpoints()
        older = next(r for r in rows if r.size > 300)
        first = publish_tiles(store, site, older)
        second = publish_tiles(store, site)
    finally:
        store.close()
    assert first.kept == 0
    full_before = len([t for t in tiles_for_size(older.size) if not t.partial]) + older.size // 256
    assert second.kept == full_before
    assert (site / "checkpoint").read_text() == rows[-1].note


def test_nothing_past_the_signed_size_is_served(built_ledger: BuiltLedger) -> None:
    store = open_store(built_ledger.url, readonly=True)
    try:
        size = built_ledger.size
        assert read_tile(store, Tile(0, 0), size)  # a full tile
        with pytest.raises(NotFoundError, match="past the latest checkpoint"):
            read_tile(store, Tile(0, size // 256, size % 256 + 1), size)
        with pytest.raises(NotFoundError):
            read_tile(store, Tile(None, size // 256), size)  # its bundle is not full yet
    finally:
        store.close()


def _tampered(built_ledger: BuiltLedger, tmp_path: Path, resource: str, offset: int) -> TileClient:
    site = tmp_path / "site"
    store = open_store(built_ledger.url, readonly=True)
    try:
        publish_tiles(store, site)
    finally:
        store.close()
    target = site / resource
    data = bytearray(target.read_bytes())
    data[offset] ^= 1
    target.write_bytes(bytes(data))
    return TileClient(site.as_uri(), built_ledger.verifier)


def test_a_flipped_hash_in_a_tile_is_caught(built_ledger: BuiltLedger, tmp_path: Path) -> None:
    client = _tampered(built_ledger, tmp_path, "tile/0/000", 32 * 17 + 3)
    latest = client.checkpoint().checkpoint
    with pytest.raises(VerificationError):
        client.entry(16, latest)  # hash 17 is its sibling
    assert client.entry(300, latest)[0]  # a proof that does not read tile 0's leaves still holds
    with pytest.raises(RootMismatchError, match="entry 17 in tile/entries/000 does not hash to its leaf"):
        client.audit(latest)
    with pytest.raises(RootMismatchError, match="the leaf hashes of the tree of size"):
        client.audit(latest, entries=False)


def test_a_flipped_hash_in_a_higher_tile_is_caught(built_ledger: BuiltLedger, tmp_path: Path) -> None:
    client = _tampered(built_ledger, tmp_path, "tile/1/000.p/2", 32 + 5)
    latest = client.checkpoint().checkpoint
    with pytest.raises(RootMismatchError):
        client.root(latest.size, expected=latest.root_hash)
    with pytest.raises(RootMismatchError, match=r"hash 1 of tile/1/000\.p/2 against tile/0/001"):
        client.audit(latest)


def test_an_audit_checks_every_tile_and_entry(built_ledger: BuiltLedger, tmp_path: Path) -> None:
    client = _tampered(built_ledger, tmp_path, "tile/entries/001", 2 + 10)
    latest = client.checkpoint().checkpoint
    assert client.audit(latest, entries=False) == 0  # the hash tiles are intact
    with pytest.raises(RootMismatchError, match="entry 256 in tile/entries/001"):
        client.audit(latest)


def test_a_flipped_byte_in_an_entry_bundle_is_caught(built_ledger: BuiltLedger, tmp_path: Path) -> None:
    client = _tampered(built_ledger, tmp_path, "tile/entries/000", 2 + 10)  # inside entry 0
    latest = client.checkpoint().checkpoint
    with pytest.raises(VerificationError):
        client.entry(0, latest)
    assert client.entry(1, latest)[0]  # its neighbours still prove


def test_a_rollback_and_a_fork_are_refused(built_ledger: BuiltLedger, tmp_path: Path) -> None:
    store = open_store(built_ledger.url, readonly=True)
    try:
        rows = store.checkpoints()
    finally:
        store.close()
    site = tmp_path / "site"
    client = TileClient(site.as_uri(), built_ledger.verifier)
    newest, older = _checkpoint(rows[-1].note, built_ledger), _checkpoint(rows[-3].note, built_ledger)
    with pytest.raises(InconsistencyError, match="shrank"):
        client.consistency(newest, older)
    forked = Checkpoint(newest.origin, newest.size, bytes(32))
    with pytest.raises(InconsistencyError, match="fork"):
        client.consistency(forked, newest)


def test_level_two_tiles_rebuild_proofs(big_ledger: Path, tmp_path: Path) -> None:
    store = open_store(str(big_ledger), readonly=True)
    try:
        site = tmp_path / "site"
        publish_tiles(store, site)
        assert (site / "tile/2/000.p/1").exists()
        signer = make_log_signer()
        verifier = parse_verifier_key(verifier_key(signer.name, signer.public_key))
        client = TileClient(site.as_uri(), verifier)
        latest = client.checkpoint().checkpoint
        client.root(latest.size, expected=latest.root_hash)
        assert client.audit(latest) == latest.size
        own = TiledNodeReader(store.nodes)
        for index in random.Random(5).sample(range(latest.size), 40):
            body, proof = client.entry(index, latest)
            assert proof == inclusion_proof(index, latest.size, own)
            assert body == store.entry(index).body
        for row in store.checkpoints()[:-1]:
            old = Checkpoint.from_text(open_note(row.note, [verifier])[0])
            assert client.consistency(old, latest) == consistency_proof(old.size, latest.size, own)
    finally:
        store.close()


def test_every_entry_the_ledger_takes_in_fits_an_entry_bundle(tmp_path: Path) -> None:
    from lineage_ledger.core.encoding import canonical_bytes
    from lineage_ledger.core.envelope import seal_batch
    from lineage_ledger.core.tiles import encode_bundle
    from lineage_ledger.errors import InputError
    from lineage_ledger.ledger.writer import MAX_NEW_EVENT_BYTES
    from tests.conftest import token_event, token_id

    def sized(n: int, label: str) -> bytes:
        """An ISSUED event of exactly ``n`` bytes, padded by an extension field (kept, as unknown fields are)."""
        event = json.loads(token_event("ISSUED", token_id(label), 1_796_115_600_000_000_000))
        event["x_padding"] = ""
        event["x_padding"] = "p" * (n - len(canonical_bytes(event)))
        return canonical_bytes(event)

    producer = make_producer_signer()
    with Ledger.create(str(tmp_path / "big-events.db"), make_log_signer()) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, producer.public_key)
        largest, too_large = sized(MAX_NEW_EVENT_BYTES, "a"), sized(MAX_NEW_EVENT_BYTES + 1, "b")
        assert (len(largest), len(too_large)) == (MAX_NEW_EVENT_BYTES, MAX_NEW_EVENT_BYTES + 1)
        envelope = seal_batch([too_large], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=producer)
        with pytest.raises(InputError, match=r"events\[0\].*tlog-tiles entry bundle"):
            ledger.append(envelope)
        envelope = seal_batch([largest], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=producer)
        (receipt,) = ledger.append(envelope).receipts
        body = ledger.store.entry(receipt.index).body
        assert len(body) > MAX_NEW_EVENT_BYTES
        assert encode_bundle([body])  # fits the uint16 prefix

"""The witness's decisions (C2SP tlog-witness add-checkpoint), each refusal with the error class whose status
the spec gives; over real ledgers' checkpoints and proofs, and a real state file."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineage_ledger.core.cosignature import AddCheckpoint, CosignerVerifier, format_add_checkpoint, verify_cosignatures
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.note import Checkpoint, NoteVerifier, sign_note
from lineage_ledger.errors import InputError, NotFoundError, SignatureError, VerificationError
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.witness.app import _STATUS
from lineage_ledger.witness.state import WitnessState
from lineage_ledger.witness.witness import EMPTY_ROOT, StaleSizeError, UnknownLogError, Witness, WitnessedLog
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    SETTINGS,
    append_in_batches,
    make_log_signer,
    make_producer_signer,
    token_events,
)

WITNESS = Ed25519Signer("witness.test/w1", bytes([9]) * 32)
WITNESS_KEY = CosignerVerifier.from_public_key(WITNESS.name, WITNESS.public_key)


class Log:
    """A real ledger whose checkpoints the tests submit."""

    def __init__(self, path: Path, label: str = "t") -> None:
        self.ledger = Ledger.create(str(path), make_log_signer(), settings=SETTINGS)
        self.ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
        self.label = label

    def grow(self, events: int) -> str:
        append_in_batches(self.ledger, token_events(events, label=self.label), make_producer_signer())
        self.ledger.seal()
        row = self.ledger.checkpoint()
        assert row is not None
        return row.note

    def request(self, old: int, note: str) -> bytes:
        size = Checkpoint.from_text(note.split("\n\n", maxsplit=1)[0] + "\n").size
        proof = self.ledger.consistency_proof(old, size) if 0 < old < size else []
        return format_add_checkpoint(AddCheckpoint(old, tuple(proof), note))


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    built = Log(tmp_path / "log.db")
    yield built
    built.ledger.close()


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Witness]:
    state = WitnessState(tmp_path / "witness.db")
    verifier = make_log_verifier()
    yield Witness(WITNESS, [WitnessedLog(verifier.name, (verifier,))], state, clock=lambda: 1_800_000_000.5)
    state.close()


def make_log_verifier() -> NoteVerifier:
    signer = make_log_signer()
    return NoteVerifier.from_public_key(signer.name, signer.public_key)


def status(error: Exception) -> int:
    return next(code for cls, code in _STATUS if isinstance(error, cls))


def test_cosigns_from_zero_then_consistently_and_records_each(log: Log, witness: Witness) -> None:
    first = log.grow(20)
    lines = witness.add_checkpoint(log.request(0, first))
    found = verify_cosignatures(first + lines, [WITNESS_KEY])
    assert [c.timestamp for c in found] == [1_800_000_000]
    size1 = Checkpoint.from_text(first.split("\n\n")[0] + "\n").size
    second = log.grow(30)
    lines = witness.add_checkpoint(log.request(size1, second))
    assert verify_cosignatures(second + lines, [WITNESS_KEY])
    record = witness.state.get(log.ledger.origin)
    assert record is not None
    assert record.note == second + lines
    assert witness.latest(hashlib.sha256(log.ledger.origin.encode()).hexdigest()) == second + lines


def test_the_same_checkpoint_again_is_cosigned_again(log: Log, witness: Witness) -> None:
    note = log.grow(10)
    witness.add_checkpoint(log.request(0, note))
    size = log.ledger.sealed_size
    assert verify_cosignatures(note + witness.add_checkpoint(log.request(size, note)), [WITNESS_KEY])


def test_a_wrong_old_size_gets_409_with_the_witness_size(log: Log, witness: Witness) -> None:
    note = log.grow(10)
    witness.add_checkpoint(log.request(0, note))
    size = log.ledger.sealed_size
    newer = log.grow(10)
    with pytest.raises(StaleSizeError) as caught:
        witness.add_checkpoint(log.request(0, newer))
    assert caught.value.size == size
    assert status(caught.value) == 409
    with pytest.raises(StaleSizeError):
        witness.add_checkpoint(log.request(size - 1, newer))


def test_a_rollback_to_an_older_checkpoint_is_refused(log: Log, witness: Witness) -> None:
    old_note = log.grow(10)
    old_size = log.ledger.sealed_size
    witness.add_checkpoint(log.request(0, old_note))
    new_note = log.grow(10)
    witness.add_checkpoint(log.request(old_size, new_note))
    new_size = log.ledger.sealed_size
    # the log shows the witness the older checkpoint again: either it claims the witness's size (above the
    # checkpoint: 400) or its own (not the witness's: 409); nothing is cosigned and the record stays
    with pytest.raises(InputError) as bad:
        witness.add_checkpoint(format_add_checkpoint(AddCheckpoint(new_size, (), old_note)))
    assert status(bad.value) == 400
    with pytest.raises(StaleSizeError) as stale:
        witness.add_checkpoint(log.request(0, old_note))
    assert stale.value.size == new_size
    record = witness.state.get(log.ledger.origin)
    assert record is not None
    assert record.size == new_size


def test_a_fork_is_refused_with_422(tmp_path: Path, log: Log, witness: Witness) -> None:
    note = log.grow(10)
    size = log.ledger.sealed_size
    witness.add_checkpoint(log.request(0, note))
    fork = Log(tmp_path / "fork.db", label="fork")  # same key and origin, other entries
    try:
        fork.grow(10)
        assert fork.ledger.sealed_size == size
        fork_note = fork.grow(10)
        with pytest.raises(VerificationError) as caught:  # a consistency proof of the fork's own tree
            witness.add_checkpoint(fork.request(size, fork_note))
        assert status(caught.value) == 422
        same_size = fork.ledger.store.checkpoints(size)[0].note
        assert fork.ledger.store.checkpoints(size)[0].size == size
        with pytest.raises(VerificationError) as caught:  # same size, another root
            witness.add_checkpoint(fork.request(size, same_size))
        assert status(caught.value) == 422
    finally:
        fork.ledger.close()
    record = witness.state.get(log.ledger.origin)
    assert record is not None
    assert record.note.startswith(note)


def test_a_bad_proof_is_422_and_a_proof_from_zero_too(log: Log, witness: Witness) -> None:
    first = log.grow(10)
    size = log.ledger.sealed_size
    with pytest.raises(VerificationError) as caught:
        witness.add_checkpoint(format_add_checkpoint(AddCheckpoint(0, (bytes(32),), first)))
    assert status(caught.value) == 422
    witness.add_checkpoint(log.request(0, first))
    second = log.grow(10)
    body = log.request(size, second)
    proof_line = body.split(b"\n")[1]
    flipped = base64.b64encode(bytes([base64.b64decode(proof_line)[0] ^ 1]) + base64.b64decode(proof_line)[1:])
    with pytest.raises(VerificationError) as caught:
        witness.add_checkpoint(body.replace(proof_line, flipped))
    assert status(caught.value) == 422


def test_an_empty_tree_must_have_the_empty_root(witness: Witness) -> None:
    signer = make_log_signer()
    bad = sign_note(Checkpoint(signer.name, 0, bytes(32)).to_text(), [signer])
    with pytest.raises(VerificationError) as caught:
        witness.add_checkpoint(format_add_checkpoint(AddCheckpoint(0, (), bad)))
    assert status(caught.value) == 422
    good = sign_note(Checkpoint(signer.name, 0, EMPTY_ROOT).to_text(), [signer])
    assert verify_cosignatures(
        good + witness.add_checkpoint(format_add_checkpoint(AddCheckpoint(0, (), good))), [WITNESS_KEY]
    )


def test_unknown_logs_are_404_and_unsigned_checkpoints_403(log: Log, witness: Witness) -> None:
    stranger = Ed25519Signer("stranger.example/log", bytes([3]) * 32)
    note = sign_note(Checkpoint(stranger.name, 0, EMPTY_ROOT).to_text(), [stranger])
    with pytest.raises(UnknownLogError) as unknown:
        witness.add_checkpoint(format_add_checkpoint(AddCheckpoint(0, (), note)))
    assert status(unknown.value) == 404
    impostor = Ed25519Signer(make_log_signer().name, bytes([4]) * 32)  # the log's name, another key
    forged = sign_note(Checkpoint(impostor.name, 0, EMPTY_ROOT).to_text(), [impostor])
    with pytest.raises(SignatureError) as unsigned:
        witness.add_checkpoint(format_add_checkpoint(AddCheckpoint(0, (), forged)))
    assert status(unsigned.value) == 403
    real = log.grow(5)
    line = real.splitlines()[-1]
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[10] ^= 1  # the log key's own line, its signature broken
    broken = real.replace(line, f"{line.split(' ')[0]} {line.split(' ')[1]} {base64.b64encode(bytes(raw)).decode()}")
    with pytest.raises(SignatureError) as bad_signature:
        witness.add_checkpoint(log.request(0, broken))
    assert status(bad_signature.value) == 403
    assert witness.state.get(log.ledger.origin) is None
    with pytest.raises(NotFoundError):
        witness.latest(hashlib.sha256(log.ledger.origin.encode()).hexdigest())


def test_old_size_above_the_checkpoint_is_400(log: Log, witness: Witness) -> None:
    note = log.grow(5)
    with pytest.raises(InputError) as caught:
        witness.add_checkpoint(format_add_checkpoint(AddCheckpoint(log.ledger.sealed_size + 1, (), note)))
    assert status(caught.value) == 400


def test_the_record_survives_reopening_the_state(tmp_path: Path, log: Log) -> None:
    verifier = make_log_verifier()
    state = WitnessState(tmp_path / "w.db")
    Witness(WITNESS, [WitnessedLog(verifier.name, (verifier,))], state).add_checkpoint(log.request(0, log.grow(5)))
    state.close()
    reopened = WitnessState(tmp_path / "w.db")
    try:
        record = reopened.get(verifier.name)
        assert record is not None
        assert record.size == log.ledger.sealed_size
    finally:
        reopened.close()


def test_concurrent_requests_from_one_size_cosign_once_and_never_roll_back(tmp_path: Path, log: Log) -> None:
    # the race of the spec: two requests both claim the witness's size; the check and the update are one
    # transaction, so exactly one is cosigned and the other learns the new size (409); two witness
    # processes sharing one state file are the same case, with two connections
    smaller = log.grow(5)
    larger = log.grow(5)
    verifier = make_log_verifier()
    states = [WitnessState(tmp_path / "shared.db"), WitnessState(tmp_path / "shared.db")]
    witnesses = [Witness(WITNESS, [WitnessedLog(verifier.name, (verifier,))], s) for s in states]
    bodies = [log.request(0, smaller), log.request(0, larger)]
    start = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def submit(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = witnesses[i].add_checkpoint(bodies[i])
        except StaleSizeError as e:
            outcomes[i] = e

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        won = [i for i in range(2) if isinstance(outcomes[i], str)]
        assert len(won) == 1, outcomes
        lost = outcomes[1 - won[0]]
        assert isinstance(lost, StaleSizeError)
        record = states[0].get(verifier.name)
        assert record is not None
        assert lost.size == record.size
        assert record.note.endswith(str(outcomes[won[0]]))
    finally:
        for s in states:
            s.close()

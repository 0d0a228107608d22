"""The monitor's checks one by one: each kind of malformed entry (table-driven, over a real ledger's
entries), the entry state carried across runs, and rounds against logs that a holder of the log key
publishes (in memory, through TileClient's fetch): a bad entry under a valid signature, missing and forged
witness cosignatures, a rollback below a cosigned checkpoint, and the stall rule on an injected clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lineage_ledger.core.cosignature import CosignerVerifier, cosign
from lineage_ledger.core.crypto import Ed25519Signer, Signer
from lineage_ledger.core.merkle import leaf_hash, root_of
from lineage_ledger.core.note import Checkpoint, NoteVerifier, sign_note
from lineage_ledger.core.tiles import Tile, decode_bundle, encode_bundle
from lineage_ledger.errors import InputError, NotFoundError
from lineage_ledger.keys import load_signer
from lineage_ledger.monitor import EntryFollower, Monitor
from lineage_ledger.tile_client import TileClient
from tests.monitor.publishing import ORIGIN, create, ingest, publish


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], Signer]:
    """The entries of a real ledger (three blocks of token events, key entries, seals) and its log key."""
    folder = tmp_path_factory.mktemp("real")
    capsys = _NoCapture()
    ledger, key = folder / "a.db", folder / "a.key"
    create(capsys, ledger, key, 20, "one")  # type: ignore[arg-type]
    ingest(capsys, ledger, key, 15, "two")  # type: ignore[arg-type]
    publish(capsys, ledger, folder / "site")  # type: ignore[arg-type]
    size = int((folder / "site" / "checkpoint").read_text().split("\n")[1])
    entries = decode_bundle((folder / "site" / Tile(None, 0, size).path()).read_bytes())
    return entries, load_signer(key)


class _NoCapture:
    """The CLI helpers read capsys; a module-scoped fixture has none, and needs none."""

    def readouterr(self) -> _Captured:
        return _Captured()


class _Captured:
    out = ""
    err = ""


def _replace(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def edit(body: bytes) -> bytes:
        assert old in body
        return body.replace(old, new, 1)

    return edit


def _first(entries: list[bytes], marker: bytes) -> int:
    return next(i for i, e in enumerate(entries) if marker in e)


def test_a_real_ledgers_entries_pass_every_check(real: tuple[list[bytes], Signer]) -> None:
    entries, _ = real
    follower = EntryFollower()
    problems = [p for i, e in enumerate(entries) for p in follower.check(i, e, leaf_hash(e))]
    assert problems == []
    assert follower.block_number >= 2
    assert any(h.startswith("token:") for h in follower.heads)


@pytest.mark.parametrize(
    ("check", "marker", "edit"),
    [
        ("entry_format", b'"type":"event"', lambda body: body[:-1]),
        ("position", b'"type":"event"', None),  # index field rewritten below
        ("chain", b'"type":"event"', None),  # prev rewritten below
        ("verdict", b'"verdict":"ok"', _replace(b'"verdict":"ok"', b'"verdict":"token.reissued"')),
        ("block", b'"type":"seal"', _replace(b'"number":0', b'"number":7')),
        ("clock", b'"type":"event"', None),  # recorded_at moved back below
    ],
)
def test_each_malformed_entry_is_named(
    real: tuple[list[bytes], Signer], check: str, marker: bytes, edit: Callable[[bytes], bytes] | None
) -> None:
    entries = list(real[0])
    at = _first(entries, marker) + (1 if check in {"position", "chain", "clock"} else 0)
    if check == "clock":
        at = _first(entries[at:], b'"type":"event"') + at + 1
    body = entries[at]
    if check == "position":
        body = body.replace(f'"index":{at},'.encode(), f'"index":{at + 1},'.encode())
    elif check == "chain":
        prev = json.loads(body)["prev"]
        body = body.replace(prev.encode(), b"1" * 64)
    elif check == "clock":
        recorded = json.loads(body)["recorded_at"]
        body = body.replace(recorded.encode(), b"0" * 19 + b".00000")
    else:
        assert edit is not None
        body = edit(body)
    assert body != entries[at]
    entries[at] = body
    follower = EntryFollower()
    problems = [p for i, e in enumerate(entries) for p in follower.check(i, e, leaf_hash(e))]
    assert (at, check) in [(p.index, p.check) for p in problems], problems


def test_the_entry_state_carries_across_runs(real: tuple[list[bytes], Signer]) -> None:
    entries = list(real[0])
    at = _first(entries, b'"verdict":"ok"')
    last = max(i for i, e in enumerate(entries) if b'"verdict":"ok"' in e)
    entries[last] = entries[last].replace(b'"verdict":"ok"', b'"verdict":"token.reissued"', 1)
    whole = EntryFollower()
    expected = [p for i, e in enumerate(entries) for p in whole.check(i, e, leaf_hash(e))]
    first = EntryFollower()
    for i in range(at + 3):
        first.check(i, entries[i], leaf_hash(entries[i]))
    again = EntryFollower.from_json(json.loads(json.dumps(first.to_json())), verdicts=True, policy=first.policy)
    found = [p for i in range(at + 3, len(entries)) for p in again.check(i, entries[i], leaf_hash(entries[i]))]
    assert found == expected
    assert {p.check for p in found} == {"verdict", "block"}  # the verdict, and the root of its block


class _Log:
    """A log as its key holder publishes it: entries, their tiles, a signed (and maybe cosigned) checkpoint."""

    def __init__(self, signer: Signer, entries: list[bytes], cosigners: tuple[Signer, ...] = ()) -> None:
        assert len(entries) < 256
        leaves = [leaf_hash(e) for e in entries]
        note = sign_note(Checkpoint(ORIGIN, len(entries), root_of(leaves)).to_text(), [signer])
        text = note.split("\n\n")[0] + "\n"
        cosignatures = "".join(cosign(text, w, 1_800_000_000) for w in cosigners)
        self.files = {
            "checkpoint": (note + cosignatures).encode(),
            Tile(0, 0, len(entries)).path(): b"".join(leaves),
            Tile(None, 0, len(entries)).path(): encode_bundle(entries),
        }

    def fetch(self, path: str) -> bytes:
        if path not in self.files:
            raise NotFoundError(path)
        return self.files[path]


class _Serving:
    """The log a monitor reads; the test swaps it between rounds."""

    def __init__(self, log: _Log) -> None:
        self.log = log

    def fetch(self, path: str) -> bytes:
        return self.log.fetch(path)


def _monitor(
    serving: _Serving, signer: Signer, state: Path, clock: list[float] | None = None, **options: object
) -> Monitor:
    verifier = NoteVerifier.from_public_key(signer.name, signer.public_key)
    client = TileClient("memory:", verifier, fetch=serving.fetch)
    now = clock if clock is not None else [0.0]
    return Monitor(client, state, clock=lambda: now[0], **options)  # type: ignore[arg-type]


def test_a_bad_entry_under_a_valid_signature_is_flagged(real: tuple[list[bytes], Signer], tmp_path: Path) -> None:
    entries, signer = real
    forged = list(entries)
    at = _first(forged, b'"verdict":"ok"')
    forged[at] = forged[at].replace(b'"verdict":"ok"', b'"verdict":"token.reissued"', 1)
    findings = _monitor(_Serving(_Log(signer, forged)), signer, tmp_path / "s.json").round()
    bad = [f for f in findings if f.kind == "bad_entry"]
    assert (at, True) in [(f.index, "verdict" in f.message) for f in bad], findings
    assert findings[-1].kind == "verified"  # the log is consistent: the entry is what it committed to


def test_witness_cosignatures_quorum_and_rollback_below_a_cosigned_checkpoint(
    real: tuple[list[bytes], Signer], tmp_path: Path
) -> None:
    entries, signer = real
    w1, w2 = Ed25519Signer.generate("witness.test/a"), Ed25519Signer.generate("witness.test/b")
    keys = tuple(CosignerVerifier.from_public_key(w.name, w.public_key) for w in (w1, w2))
    serving = _Serving(_Log(signer, entries[:20], (w1,)))
    state = tmp_path / "s.json"
    kinds = [f.kind for f in _monitor(serving, signer, state, witnesses=keys, quorum=2).round()]
    assert kinds == ["witness_quorum", "verified"]
    serving.log = _Log(signer, entries[:25], (w1, w2))
    assert [f.kind for f in _monitor(serving, signer, state, witnesses=keys, quorum=2).round()] == ["verified"]
    assert json.loads(state.read_text())["witnessed"].startswith(f"{ORIGIN}\n25\n")
    serving.log = _Log(signer, entries[:20])  # shrinks below what the witnesses cosigned
    kinds = [f.kind for f in _monitor(serving, signer, state, witnesses=keys, quorum=1).round()]
    assert kinds[0] == "rollback"


def test_a_bad_cosignature_is_flagged(real: tuple[list[bytes], Signer], tmp_path: Path) -> None:
    entries, signer = real
    witness = Ed25519Signer.generate("witness.test/a")
    key = CosignerVerifier.from_public_key(witness.name, witness.public_key)
    log = _Log(signer, entries[:20], (witness,))
    note = log.files["checkpoint"].decode()
    line = note.rstrip("\n").rsplit("\n", 1)[1]
    tampered = line[:-6] + ("A" if line[-6] != "A" else "B") + line[-5:]
    log.files["checkpoint"] = note.replace(line, tampered).encode()
    findings = _monitor(_Serving(log), signer, tmp_path / "s.json", witnesses=(key,), quorum=1).round()
    assert findings[0].kind == "bad_cosignature", findings


def test_a_stall_is_flagged_only_past_the_promised_interval(real: tuple[list[bytes], Signer], tmp_path: Path) -> None:
    entries, signer = real
    serving, state, clock = _Serving(_Log(signer, entries[:20])), tmp_path / "s.json", [1000.0]
    assert [f.kind for f in _monitor(serving, signer, state, clock, stall_seconds=60).round()] == ["verified"]
    clock[0] = 1060.0  # exactly the promise: not yet a stall
    assert [f.kind for f in _monitor(serving, signer, state, clock, stall_seconds=60).round()] == ["verified"]
    clock[0] = 1061.0
    kinds = [f.kind for f in _monitor(serving, signer, state, clock, stall_seconds=60).round()]
    assert kinds == ["stall", "verified"]
    assert [f.kind for f in _monitor(serving, signer, state, clock).round()] == ["verified"]  # no promise given
    serving.log = _Log(signer, entries[:21])  # growth resets the clock
    assert [f.kind for f in _monitor(serving, signer, state, clock, stall_seconds=60).round()] == ["verified"]
    clock[0] = 1100.0
    assert [f.kind for f in _monitor(serving, signer, state, clock, stall_seconds=60).round()] == ["verified"]


def test_a_state_file_that_is_not_one_is_named_and_left_alone(real: tuple[list[bytes], Signer], tmp_path: Path) -> None:
    _, signer = real
    state = tmp_path / "s.json"
    state.write_text('{"version": 1, "entries": {"heads": 3}}')
    with pytest.raises(InputError, match="not a monitor's entry state"):
        _monitor(_Serving(_Log(signer, real[0][:5])), signer, state)
    state.write_text("[1, 2")
    with pytest.raises(InputError, match="is not a monitor state file"):
        _monitor(_Serving(_Log(signer, real[0][:5])), signer, state)
    assert state.read_text() == "[1, 2"

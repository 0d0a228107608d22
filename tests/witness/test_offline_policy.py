"""The offline verifier's witness policy: an evidence bundle whose checkpoint carries cosignatures verifies
with k of n witness keys, and is refused when a cosignature is tampered with or the quorum is not met. The
offline module re-implements cosignature/v1 on its own; these bundles are cosigned by the package's."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lineage_ledger.core.cosignature import CosignerVerifier, cosign
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.offline import main as offline_main
from lineage_ledger.offline import verify_bundle
from lineage_ledger.store import open_store
from tests.conftest import BuiltLedger

WITNESSES = [Ed25519Signer(f"witness.offline/w{i}", bytes([60 + i]) * 32) for i in range(3)]
KEYS = [str(CosignerVerifier.from_public_key(w.name, w.public_key)) for w in WITNESSES]


@pytest.fixture
def bundle(built_ledger: BuiltLedger) -> bytes:
    store = open_store(built_ledger.url)
    try:
        latest = store.latest_checkpoint()
        assert latest is not None
        text = latest.note.split("\n\n", 1)[0] + "\n"
        for signer in WITNESSES[:2]:  # two of the three witnesses cosigned
            key = CosignerVerifier.from_public_key(signer.name, signer.public_key)
            store.add_cosignatures(latest.size, [(key.name, key.key_id, cosign(text, signer, 1_750_000_000))])
        return export_evidence(store, store.entry(built_ledger.receipts[0].index).subject)
    finally:
        store.close()


def test_two_of_three_witnesses_verify_offline(built_ledger: BuiltLedger, bundle: bytes) -> None:
    report = verify_bundle(bundle, log_key=str(built_ledger.verifier), witness_keys=KEYS, witness_quorum=2)
    assert report.ok, report.problems
    assert report.witnesses == (WITNESSES[0].name, WITNESSES[1].name)
    assert report.to_json()["witnesses"] == [WITNESSES[0].name, WITNESSES[1].name]


def test_a_missing_quorum_is_refused(built_ledger: BuiltLedger, bundle: bytes) -> None:
    report = verify_bundle(bundle, log_key=str(built_ledger.verifier), witness_keys=KEYS)  # default: all 3
    assert not report.ok
    assert report.problems == ("witnesses: the checkpoint is cosigned by 2 of the given witnesses, the policy needs 3",)
    assert not verify_bundle(bundle, log_key=str(built_ledger.verifier), witness_keys=KEYS[2:]).ok


def test_a_tampered_cosignature_is_refused(built_ledger: BuiltLedger, bundle: bytes) -> None:
    data = json.loads(bundle)
    lines = data["checkpoint"].splitlines()
    name, encoded = lines[-1][2:].split(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[7] ^= 1  # the timestamp: the signed message changes
    lines[-1] = f"— {name} {base64.b64encode(bytes(raw)).decode()}"
    data["checkpoint"] = "\n".join(lines) + "\n"
    tampered = json.dumps(data).encode()
    report = verify_bundle(tampered, log_key=str(built_ledger.verifier), witness_keys=KEYS, witness_quorum=1)
    assert not report.ok
    assert any("does not verify" in p and name in p for p in report.problems), report.problems
    # under the log key alone, the cosignature lines are someone else's and are ignored
    assert verify_bundle(tampered, log_key=str(built_ledger.verifier)).ok


def test_the_stand_alone_command_takes_the_policy(
    tmp_path: Path, built_ledger: BuiltLedger, bundle: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(bundle)
    args = [str(path), "--key", str(built_ledger.verifier), "--json"]
    assert offline_main([*args, "--witness-key", KEYS[0], "--witness-key", KEYS[2], "--witness-quorum", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["witnesses"] == [WITNESSES[0].name]
    assert offline_main([*args, "--witness-key", KEYS[0], "--witness-key", KEYS[2]]) == 1

"""The leak scan: after a run through every path a personal value takes (an emitter's spool, HTTP, the
ledger, its logs and metrics), no byte sequence of any known personal value (plain, hex or base64) is in
any file the run left or in the metrics; after erasing a person and destroying the key backups as the
documented procedure says, nothing left can decrypt that person's fields."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.keys import write_signer_key
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.privacy.helpers import ALICE, BOB, people_events
from tests.service.serving import api_keys, free_port, serving

REPO = Path(__file__).resolve().parents[2]


def forms(value: bytes) -> list[bytes]:
    """``value`` as it could be spelled in bytes: itself, hex (both cases), and base64 (standard and URL-safe)
    at each of the three alignments (the middle of the encoding, which does not depend on its neighbours)."""
    out = [value, value.hex().encode(), value.hex().upper().encode()]
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * pad + value)
            out.append(text[4 if pad else 0 : -4])
    return out


def leaks(root: Path, values: list[str], extra: dict[str, bytes]) -> list[str]:
    """Where under ``root`` (and in ``extra``, name -> bytes) any form of any of ``values`` appears."""
    found = []
    blobs = {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()} | extra
    for value in values:
        for form in forms(value.encode()):
            found += [f"{value!r} as {form[:12]!r}... in {name}" for name, blob in blobs.items() if form in blob]
    return found


def emit(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lineage_ledger", "emit", *argv],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_no_personal_value_is_left_anywhere_and_an_erased_one_cannot_be_decrypted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, inputs = tmp_path / "run", tmp_path / "inputs"  # inputs: what the producer had; not scanned
    run.mkdir()
    inputs.mkdir()
    ledger = run / "people.db"
    assert main(["init", "--ledger", str(ledger), "--personal-data"]) == 0
    producer = make_producer_signer()
    key = inputs / "producer.key"
    write_signer_key(key, producer)
    register = ["keys", "register", "--ledger", str(ledger), "--producer", PRODUCER, "--key-id", PRODUCER_KEY_ID]
    assert main([*register, "--public-key", producer.public_key.hex()]) == 0
    assert main(["subject", "ingest-key", "--ledger", str(ledger), "--json"]) == 0
    ingest_key = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ingest_key"]
    headers = api_keys(ledger)
    (inputs / "producer.apikey").write_text(headers["producer"].removeprefix("Bearer "))
    events = inputs / "events.jsonl"
    events.write_bytes(b"\n".join(people_events()) + b"\n")
    spool = run / "spool"
    common = ["--producer", PRODUCER, "--key", str(key), "--key-id", PRODUCER_KEY_ID]
    common += [
        "--api-key-file",
        str(inputs / "producer.apikey"),
        "--spool",
        str(spool),
        "--seal-personal-to",
        ingest_key,
    ]

    # the ledger is down: every event waits in the spool, where the scan looks first
    nobody = f"http://127.0.0.1:{free_port()}"
    stuck = emit(str(events), "--url", nobody, *common, "--timeout", "2")
    assert stuck.returncode != 0
    assert any(spool.iterdir())
    people = [*ALICE.values(), *BOB.values()]
    assert leaks(spool, people, {"emit output": (stuck.stdout + stuck.stderr).encode()}) == []

    metrics_port = free_port()
    with serving(ledger, run / "serve.log", ["--metrics-port", str(metrics_port), "--block-seconds", "0.2"]) as server:
        delivered = emit("/dev/null", "--url", server.url, *common, "--timeout", "60")
        assert delivered.returncode == 0, delivered.stderr
        admin, auditor = {"Authorization": headers["admin"]}, {"Authorization": headers["auditor"]}
        who = {"user": ALICE["user_id"]}
        assert httpx.post(f"{server.url}/v1/subjects/export", json=who, headers=auditor).status_code == 403
        exported = httpx.post(f"{server.url}/v1/subjects/export", json=who, headers=admin, timeout=30)
        assert exported.status_code == 200, exported.text
        assert {e["event"]["payload"]["user_id"] for e in exported.json()["events"]} == {ALICE["user_id"]}
        assert len(exported.json()["events"]) == 8
        assert exported.json()["evidence"]["scope"]["kind"] == "data-subject"
        users = httpx.get(f"{server.url}/v1/query/users/{BOB['user_id']}/tokens", headers=auditor, timeout=30)
        assert [t["user_id"] for t in users.json()["answer"]["tokens"]] == [BOB["user_id"]]
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).content
        assert b"lineage" in metrics
        before = leaks(run, people, {"metrics": metrics})
        assert before == []

        backup = run / "keys-before.backup"
        assert main(["subject", "keys", "backup", "--ledger", str(ledger), str(backup)]) == 0
        alice_keys = [json.loads(line) for line in backup.read_bytes().splitlines()[1:]]
        wrapped = [base64.b64decode(k["wrapped"]) for k in alice_keys]
        erase = {"user": ALICE["user_id"], "reason": "Art. 17 request 2026-301"}
        assert httpx.post(f"{server.url}/v1/subjects/erase", json=erase, headers=auditor).status_code == 403
        erased = httpx.post(f"{server.url}/v1/subjects/erase", json=erase, headers=admin, timeout=30)
        assert erased.status_code == 200, erased.text
        record = erased.json()
        assert record["count"] == 8
        again = httpx.post(f"{server.url}/v1/subjects/erase", json=erase, headers=admin, timeout=30)
        assert again.json()["already_erased"] is True
        unknown = httpx.post(f"{server.url}/v1/subjects/erase", json={"user": "nobody", "reason": "r"}, headers=admin)
        assert unknown.status_code == 404
        after = httpx.post(f"{server.url}/v1/subjects/export", json=who, headers=admin, timeout=30).json()
        assert after["events"] == []
        assert [r["index"] for r in after["erasures"]] == [record["index"]]
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).content
        assert server.stop() == 0  # a clean shutdown: whatever it writes on the way out is scanned too

    # the procedure after an erasure: destroy every backup taken before it, take a new one
    backup.unlink()
    assert main(["subject", "keys", "backup", "--ledger", str(ledger), str(run / "keys-after.backup")]) == 0
    assert leaks(run, people, {"metrics": metrics}) == []
    # Alice's wrapped keys (the only way to her fields) are in no file left: not the key store, its
    # write-ahead log, or the new backup
    erased_kids = set(record["kids"])
    alice_wrapped = [w for k, w in zip(alice_keys, wrapped, strict=True) if k["kid"] in erased_kids]
    assert alice_wrapped
    left = {str(p): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert [name for name, blob in left.items() for w in alice_wrapped if w in blob] == []
    assert [n for n, b in left.items() if any(k.encode() in b for k in erased_kids) and "subjects" in n] == []

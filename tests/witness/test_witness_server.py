"""``lineage witness serve`` as a real process, and a CLI ledger getting its checkpoints cosigned by it:
the status codes over real HTTP, cosignatures served with the checkpoint, the k-of-n policy of ``lineage
verify`` and of evidence bundles, a rolled-back ledger refused, and the witness's state surviving SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.cosignature import (
    AddCheckpoint,
    CosignerVerifier,
    format_add_checkpoint,
    parse_cosigner_key,
    verify_cosignatures,
)
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.note import Checkpoint, sign_note
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR
from lineage_ledger.offline import verify_bundle
from tests.conftest import token_events
from tests.service.serving import free_port, wait_healthy

ORIGIN = "witnessed.example/log"


@dataclass
class WitnessProcess:
    url: str
    key: CosignerVerifier
    key_file: Path
    state: Path
    log_key: str
    output: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        script = Path(sys.executable).parent / "lineage"
        port = self.url.rsplit(":", 1)[1]
        command = [str(script), "witness", "serve", "--key", str(self.key_file), "--state", str(self.state)]
        env = {k: v for k, v in os.environ.items() if k != DEFAULT_KEY_ENV_VAR}
        with self.output.open("ab") as sink:
            self.process = subprocess.Popen(
                [*command, "--log", self.log_key, "--port", port], stdout=sink, stderr=subprocess.STDOUT, env=env
            )
        wait_healthy(self.url, self.process, self.output)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    @property
    def spec(self) -> str:
        return f"{self.url} {self.key}"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ingest(capsys: pytest.CaptureFixture[str], ledger: Path, events: int, label: str) -> None:
    path = ledger.with_name(f"{label}.jsonl")
    path.write_bytes(b"".join(e + b"\n" for e in token_events(events, label=label)))
    code, _, err = cli(capsys, "ingest", str(path), "--ledger", str(ledger))
    assert code == 0, err


@pytest.fixture
def ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "ledger.db"
    code, _out, err = cli(capsys, "init", "--ledger", str(path), "--origin", ORIGIN, "--json")
    assert code == 0, err
    ingest(capsys, path, 12, "first")
    return path


def log_key(capsys: pytest.CaptureFixture[str], ledger: Path) -> str:
    code, out, _ = cli(capsys, "checkpoint", "--ledger", str(ledger), "--verifier-key")
    assert code == 0
    return out.strip()


def make_witness(tmp_path: Path, capsys: pytest.CaptureFixture[str], ledger: Path, name: str) -> WitnessProcess:
    key_file = tmp_path / f"{name.replace('/', '_')}.key"
    code, out, err = cli(capsys, "witness", "init", "--key", str(key_file), "--name", name)
    assert code == 0, err
    code, again, _ = cli(capsys, "witness", "key", "--key", str(key_file))
    assert again == out
    return WitnessProcess(
        f"http://127.0.0.1:{free_port()}",
        parse_cosigner_key(out.strip()),
        key_file,
        tmp_path / f"{name.replace('/', '_')}.state",
        log_key(capsys, ledger),
        tmp_path / f"{name.replace('/', '_')}.log",
    )


@pytest.fixture
def witness(tmp_path: Path, capsys: pytest.CaptureFixture[str], ledger: Path) -> Iterator[WitnessProcess]:
    w = make_witness(tmp_path, capsys, ledger, "witness.test/w1")
    w.start()
    yield w
    w.kill()


def cosign(capsys: pytest.CaptureFixture[str], ledger: Path, *witnesses: str) -> tuple[int, list[dict[str, object]]]:
    args = [a for w in witnesses for a in ("--witness", w)]
    code, out, err = cli(capsys, "witness", "cosign", "--ledger", str(ledger), *args, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


def latest_note(capsys: pytest.CaptureFixture[str], ledger: Path) -> str:
    code, out, _ = cli(capsys, "checkpoint", "--ledger", str(ledger))
    assert code == 0
    return out


def test_cosigned_checkpoints_are_served_and_verified_k_of_n(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ledger: Path, witness: WitnessProcess
) -> None:
    code, outcomes = cosign(capsys, ledger, witness.spec)
    assert code == 0
    assert outcomes[0]["status"] == "cosigned"
    ingest(capsys, ledger, 9, "second")  # the next round sends old <size> and a consistency proof
    code, outcomes = cosign(capsys, ledger, witness.spec)
    assert code == 0
    assert outcomes[0]["status"] == "cosigned"
    note = latest_note(capsys, ledger)
    assert [c.verifier for c in verify_cosignatures(note, [witness.key])] == [witness.key]
    assert note == httpx.get(f"{witness.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint").text

    key = log_key(capsys, ledger)
    absent = CosignerVerifier.from_public_key("witness.test/absent", Ed25519Signer.generate("x").public_key)
    verify = ["verify", "--ledger", str(ledger), "--key", key, "--witness-key", str(witness.key), "--json"]
    code, out, err = cli(capsys, *verify)
    assert code == 0, out + err
    assert json.loads(out)["witnessed_size"] == Checkpoint.from_text(note.split("\n\n")[0] + "\n").size
    code, out, _ = cli(capsys, *verify, "--witness-key", str(absent), "--witness-quorum", "1")
    assert code == 0, out
    code, out, _ = cli(capsys, *verify, "--witness-key", str(absent))  # default quorum: all (2 of 2)
    assert code == 1, out
    assert json.loads(out)["witness_problems"], out

    bundle = tmp_path / "bundle.json"
    subject = json.loads(token_events(1, label="first")[0])["token_id"]
    code, _, err = cli(capsys, "evidence", "export", subject, "--ledger", str(ledger), "-o", str(bundle))
    assert code == 0, err
    report = verify_bundle(bundle.read_bytes(), log_key=key, witness_keys=[str(witness.key)])
    assert report.ok, report.problems
    assert report.witnesses == (witness.key.name,)
    two = verify_bundle(bundle.read_bytes(), log_key=key, witness_keys=[str(witness.key), str(absent)])
    assert not two.ok
    assert "needs 2" in two.problems[0]
    code, _, _ = cli(capsys, "evidence", "verify", str(bundle), "--key", key, "--witness-key", str(witness.key))
    assert code == 0


def test_a_ledger_without_the_quorum_fails_verification(
    capsys: pytest.CaptureFixture[str], ledger: Path, witness: WitnessProcess
) -> None:
    key = log_key(capsys, ledger)
    code, out, _ = cli(capsys, "verify", "--ledger", str(ledger), "--key", key, "--witness-key", str(witness.key))
    assert code == 1
    assert "witness policy" in out


def test_the_status_codes_of_the_spec_over_real_http(
    capsys: pytest.CaptureFixture[str], ledger: Path, witness: WitnessProcess
) -> None:
    note = latest_note(capsys, ledger)
    size = Checkpoint.from_text(note.split("\n\n")[0] + "\n").size
    url = f"{witness.url}/add-checkpoint"
    with httpx.Client(timeout=10.0) as client:
        assert client.get(f"{witness.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint").status_code == 404
        ok = client.post(url, content=format_add_checkpoint(AddCheckpoint(0, (), note)))
        assert ok.status_code == 200
        assert ok.text.startswith(f"— {witness.key.name} ")
        stale = client.post(url, content=format_add_checkpoint(AddCheckpoint(0, (), note)))
        assert stale.status_code == 409
        assert stale.headers["content-type"] == "text/x.tlog.size"
        assert stale.text == f"{size}\n"
        assert client.post(url, content=b"old 0\nno blank line").status_code == 400
        above = client.post(url, content=format_add_checkpoint(AddCheckpoint(size + 1, (), note)))
        assert above.status_code == 400
        stranger = Ed25519Signer("stranger.example/log", bytes([5]) * 32)
        unknown = sign_note(Checkpoint(stranger.name, 1, bytes(32)).to_text(), [stranger])
        assert client.post(url, content=format_add_checkpoint(AddCheckpoint(0, (), unknown))).status_code == 404
        impostor = Ed25519Signer(ORIGIN, bytes([6]) * 32)
        forged = sign_note(Checkpoint(ORIGIN, size, bytes(32)).to_text(), [impostor])
        assert client.post(url, content=format_add_checkpoint(AddCheckpoint(size, (), forged))).status_code == 403
        assert client.post(url, content=b"x" * (65 * 1024)).status_code == 400


def test_a_rolled_back_ledger_is_refused_and_the_witness_keeps_its_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ledger: Path, witness: WitnessProcess
) -> None:
    assert cosign(capsys, ledger, witness.spec)[0] == 0
    backup = tmp_path / "backup.db"
    shutil.copyfile(ledger, backup)
    ingest(capsys, ledger, 9, "second")
    assert cosign(capsys, ledger, witness.spec)[0] == 0
    witnessed = latest_note(capsys, ledger)
    shutil.copyfile(backup, ledger)  # the operator restores an older, internally consistent copy
    assert cosign(capsys, ledger, witness.spec)[1][0]["status"] == "skipped"  # its checkpoint was cosigned
    ingest(capsys, ledger, 3, "rewritten")  # and writes another history from there
    code, outcomes = cosign(capsys, ledger, witness.spec)
    assert code == 1
    assert outcomes[0]["status"] == "failed"
    assert "rolled back or forked" in str(outcomes[0]["detail"])
    ingest(capsys, ledger, 20, "longer")  # now longer than what the witness saw: no consistency proof holds
    code, outcomes = cosign(capsys, ledger, witness.spec)
    assert code == 1
    assert " 422 " in str(outcomes[0]["detail"])
    served = httpx.get(f"{witness.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint").text
    assert served == witnessed


def test_the_witness_state_survives_sigkill(
    capsys: pytest.CaptureFixture[str], ledger: Path, witness: WitnessProcess
) -> None:
    assert cosign(capsys, ledger, witness.spec)[0] == 0
    note = latest_note(capsys, ledger)
    size = Checkpoint.from_text(note.split("\n\n")[0] + "\n").size
    witness.kill()
    witness.start()
    stale = httpx.post(f"{witness.url}/add-checkpoint", content=format_add_checkpoint(AddCheckpoint(0, (), note)))
    assert (stale.status_code, stale.text) == (409, f"{size}\n")
    ingest(capsys, ledger, 5, "after")
    assert cosign(capsys, ledger, witness.spec)[0] == 0  # starts from the stored cosignature's size


def test_a_witness_policy_is_refused_on_a_sharded_ledger_rather_than_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sharded.db"
    code, _, err = cli(capsys, "init", "--ledger", str(path), "--shards", "2")
    assert code == 0, err
    witness = CosignerVerifier.from_public_key("witness.test/w1", Ed25519Signer.generate("w").public_key)
    code, _, err = cli(capsys, "verify", "--ledger", str(path), "--witness-key", str(witness))
    assert code == 2
    assert "applies to one log" in err


def test_cosign_names_a_missing_ledger_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    witness = CosignerVerifier.from_public_key("witness.test/w1", Ed25519Signer.generate("w").public_key)
    code, _, err = cli(
        capsys, "witness", "cosign", "--ledger", str(missing), "--witness", f"http://127.0.0.1:9 {witness}"
    )
    assert code == 2  # a usage mistake: only init creates a ledger
    assert "no ledger" in err
    assert not missing.exists()

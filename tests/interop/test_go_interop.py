"""Interoperability with independent Go implementations of the C2SP formats (built from the Go module proxy by
scripts/install-go-interop.sh, pinned by tests/interop/go.mod and go.sum):

* our cosigned checkpoints, their signature lines shuffled, verify with golang.org/x/mod/sumdb/note (the log
  signature) and github.com/transparency-dev/formats/note (cosignature/v1), via ``cosigverify``;
* our witness (``lineage witness serve``) cosigns for ``witnessclient``, a client whose tree, consistency
  proofs and cosignature check come from golang.org/x/mod/sumdb/tlog and transparency-dev/formats, and
  answers its stale size with the spec's 409;
* our ledger gets its checkpoints cosigned by filippo.io/torchwood's litewitness, a C2SP tlog-witness that
  shares no code with ours, through ``lineage witness cosign``, first from size 0 and then with a consistency
  proof from the witness's size; its cosignatures verify under our verifier too.

The binaries are missing until ``make test`` (or the script) built them: the tests then skip, saying so; with
``CI=true`` they fail instead.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lineage_ledger.core.cosignature import CosignerVerifier, verify_cosignatures
from lineage_ledger.core.note import Checkpoint
from lineage_ledger.store import open_store
from tests.service.serving import free_port
from tests.witness.test_witness_server import (
    ORIGIN,
    WitnessProcess,
    cli,
    cosign,
    ingest,
    latest_note,
    log_key,
    make_witness,
)

STARTUP_SECONDS = 30.0


def go_bin() -> Path:
    """Where scripts/install-go-interop.sh puts the binaries (skip, or fail with CI=true, if absent)."""
    home = os.environ.get("LINEAGE_GO_INTEROP_HOME") or str(Path.home() / ".cache" / "lineage-ledger" / "go-interop")
    bin_dir = Path(home) / "bin"
    if not all(
        (bin_dir / name).is_file()
        for name in ("cosigverify", "witnessclient", "tlogtiles", "litewitness", "witnessctl")
    ):
        reason = (
            f"the Go interop binaries are not in {bin_dir}: run bash scripts/install-go-interop.sh (make test does)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return bin_dir


def cosigverify(note: str, log: str, *witnesses: CosignerVerifier) -> dict[str, object]:
    args = [str(go_bin() / "cosigverify"), "-log", log]
    for w in witnesses:
        args += ["-witness", str(w)]
    done = subprocess.run(args, input=note.encode(), capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, object] = json.loads(done.stdout)
    return result


def shuffled(note: str, seed: int) -> str:
    text, signatures = note.split("\n\n", 1)
    lines = signatures.splitlines()
    random.Random(seed).shuffle(lines)
    return text + "\n\n" + "".join(f"{line}\n" for line in lines)


@pytest.fixture
def ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    go_bin()
    path = tmp_path / "ledger.db"
    code, _, err = cli(capsys, "init", "--ledger", str(path), "--origin", ORIGIN)
    assert code == 0, err
    ingest(capsys, path, 12, "first")
    return path


def test_go_verifies_our_cosigned_checkpoint_with_extra_lines_in_any_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ledger: Path
) -> None:
    witnesses: list[WitnessProcess] = []
    try:
        for i in range(3):
            w = make_witness(tmp_path, capsys, ledger, f"witness.test/w{i}")
            w.start()
            witnesses.append(w)
        code, _ = cosign(capsys, ledger, *(w.spec for w in witnesses))
        assert code == 0
        note = latest_note(capsys, ledger)
        key = log_key(capsys, ledger)
        size = Checkpoint.from_text(note.split("\n\n", 1)[0] + "\n").size
        for seed in range(3):
            result = cosigverify(shuffled(note, seed), key, *(w.key for w in witnesses))
            assert result["origin"] == ORIGIN
            assert result["size"] == size
            names = sorted(str(s["name"]) for s in result["signatures"])  # type: ignore[attr-defined]
            assert names == sorted([ORIGIN, *(w.key.name for w in witnesses)])
        # the log key alone: the Go verifier ignores the three cosignatures, as the signed-note spec requires
        assert cosigverify(shuffled(note, 7), key)["signatures"] == [{"name": ORIGIN}]
    finally:
        for w in witnesses:
            w.kill()


def _ssh_public_key(path: Path) -> bytes:
    blob = base64.b64decode(path.read_text().split()[1])
    kind_length = int.from_bytes(blob[:4], "big")
    assert blob[4 : 4 + kind_length] == b"ssh-ed25519"
    rest = blob[4 + kind_length :]
    assert int.from_bytes(rest[:4], "big") == 32
    return rest[4:36]


@pytest.fixture
def litewitness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ledger: Path
) -> Iterator[tuple[str, CosignerVerifier]]:
    """filippo.io/torchwood's litewitness on a loopback port, its key in a dedicated ssh-agent, following the
    ledger's log (witnessctl add-log, add-key)."""
    bin_dir = go_bin()
    for tool in ("ssh-agent", "ssh-add", "ssh-keygen"):
        if shutil.which(tool) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{tool} is not on PATH; litewitness takes its key from an ssh-agent")
            pytest.skip(f"{tool} is not on PATH; litewitness takes its key from an ssh-agent")
    key_file = tmp_path / "litewitness.pem"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True, timeout=30)
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    processes = [agent]
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not socket.exists():
            assert agent.poll() is None, "ssh-agent exited"
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)  # polling a condition with a deadline
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket)}
        subprocess.run(["ssh-add", "-q", str(key_file)], check=True, env=env, timeout=30, capture_output=True)
        fingerprint = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key_file}.pub"], check=True, capture_output=True, text=True
        ).stdout.split()[1]
        db = tmp_path / "litewitness.db"
        ctl = str(bin_dir / "witnessctl")
        subprocess.run([ctl, "add-log", "-db", str(db), "-origin", ORIGIN], check=True, timeout=60, capture_output=True)
        add_key = [ctl, "add-key", "-db", str(db), "-origin", ORIGIN, "-key", log_key(capsys, ledger)]
        subprocess.run(add_key, check=True, timeout=60, capture_output=True)
        name = "witness.interop/litewitness"
        port = free_port()
        output = tmp_path / "litewitness.log"
        command = [str(bin_dir / "litewitness"), "-name", name, "-db", str(db), "-ssh-agent", str(socket)]
        command += ["-key", fingerprint, "-listen", f"127.0.0.1:{port}"]
        with output.open("wb") as sink:
            server = subprocess.Popen(
                command,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        processes.append(server)
        url = f"http://127.0.0.1:{port}"
        while True:
            assert server.poll() is None, output.read_text()
            try:
                if httpx.get(url + "/", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"litewitness did not answer:\n{output.read_text()}"
            time.sleep(0.05)  # polling a condition with a deadline
        yield url, CosignerVerifier.from_public_key(name, _ssh_public_key(Path(f"{key_file}.pub")))
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_our_ledger_gets_cosigned_by_litewitness(
    capsys: pytest.CaptureFixture[str], ledger: Path, litewitness: tuple[str, CosignerVerifier]
) -> None:
    url, key = litewitness
    spec = f"{url} {key}"
    code, outcomes = cosign(capsys, ledger, spec)
    assert code == 0, outcomes
    assert outcomes[0]["status"] == "cosigned"
    first = latest_note(capsys, ledger)
    assert [c.verifier for c in verify_cosignatures(first, [key])] == [key]

    ingest(capsys, ledger, 9, "second")  # now with old <size> and our consistency proof, which litewitness checks
    code, outcomes = cosign(capsys, ledger, spec)
    assert code == 0, outcomes
    note = latest_note(capsys, ledger)
    assert note != first
    assert [c.verifier for c in verify_cosignatures(note, [key])] == [key]
    assert [s["name"] for s in cosigverify(note, log_key(capsys, ledger), key)["signatures"]] == [  # type: ignore[attr-defined]
        ORIGIN,
        key.name,
    ]
    key_arg = log_key(capsys, ledger)
    code, out, _ = cli(capsys, "verify", "--ledger", str(ledger), "--key", key_arg, "--witness-key", str(key))
    assert code == 0, out


def witnessclient(witness: WitnessProcess, old: int, ledger: Path, note: str, tmp_path: Path) -> dict[str, object]:
    store = open_store(str(ledger), readonly=True)
    try:
        entries = tmp_path / "entries.b64"
        entries.write_text(
            "".join(base64.b64encode(row.body).decode() + "\n" for row in store.entries(0, store.size()))
        )
    finally:
        store.close()
    note_file = tmp_path / "checkpoint.note"
    note_file.write_text(note)
    args = [str(go_bin() / "witnessclient"), "-url", witness.url, "-witness", str(witness.key), "-old", str(old)]
    args += ["-entries", str(entries), "-note", str(note_file)]
    done = subprocess.run(args, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_our_witness_cosigns_for_an_independent_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ledger: Path
) -> None:
    witness = make_witness(tmp_path, capsys, ledger, "witness.test/w1")
    witness.start()
    try:
        first = latest_note(capsys, ledger)
        first_size = Checkpoint.from_text(first.split("\n\n", 1)[0] + "\n").size
        accepted = witnessclient(witness, 0, ledger, first, tmp_path)
        assert accepted["status"] == 200
        assert accepted["cosigned"] is True
        ingest(capsys, ledger, 9, "second")
        second = latest_note(capsys, ledger)
        stale = witnessclient(witness, 0, ledger, second, tmp_path)
        assert stale == {"status": 409, "body": f"{first_size}\n"}
        cosigned = witnessclient(witness, first_size, ledger, second, tmp_path)  # Go's tlog.ProveTree proof
        assert cosigned["status"] == 200
        assert cosigned["cosigned"] is True
        assert [c.verifier for c in verify_cosignatures(second + str(cosigned["body"]), [witness.key])] == [witness.key]
    finally:
        witness.kill()

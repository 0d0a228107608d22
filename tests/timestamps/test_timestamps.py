"""RFC 3161 timestamps of checkpoints against a real TSA (OpenSSL ``ts -reply`` on loopback): requested,
stored, checked offline by ``lineage timestamp verify``, ``lineage verify --tsa-cert`` and ``lineage evidence
verify --tsa-cert``, and independently by ``openssl ts -verify``; tampered tokens fail."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from lineage_ledger.cli.main import main
from lineage_ledger.errors import SignatureError
from lineage_ledger.store import open_store
from lineage_ledger.timestamps.token import load_tsa_anchors, verify_timestamp
from tests.conftest import BuiltLedger, token_id
from tests.service.serving import free_port
from tests.timestamps.tsa import Authority, openssl, serve_authority


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except ValueError:
        return code, out


def _signed_text(note: str) -> bytes:
    """The note's text as the signed-note spec splits it: everything before the blank line, plus a newline."""
    return note[: note.index("\n\n") + 1].encode("utf-8")


def _stored(ledger: BuiltLedger) -> tuple[int, str, bytes]:
    store = open_store(ledger.url, readonly=True)
    try:
        [size] = store.timestamped_sizes()
        note = store.checkpoints(size)[0].note
        token = store.timestamp(size)
    finally:
        store.close()
    assert token is not None
    return size, note, token


def _replace_token(ledger: BuiltLedger, size: int, token: bytes) -> None:
    """Play the attacker: rewrite a stored token behind the ledger's back."""
    with sqlite3.connect(ledger.path) as db:
        db.execute("DROP TRIGGER timestamps_no_update")
        db.execute("UPDATE timestamps SET token = ? WHERE size = ?", (token, size))


@pytest.fixture
def other_authority(tmp_path: Path) -> Iterator[Authority]:
    """A second TSA with a root of its own."""
    yield from serve_authority(tmp_path / "other-tsa", "Other TSA")


def test_a_checkpoint_timestamped_by_a_real_tsa_verifies_offline_and_with_openssl(
    built_ledger: BuiltLedger, authority: Authority, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = str(authority.ca_cert)
    code, out = _run(capsys, "timestamp", "request", "--ledger", built_ledger.url, "--tsa-url", authority.url, "--json")
    assert code == 0, out
    assert out == {"size": built_ledger.size, "status": "timestamped"}
    size, note, token = _stored(built_ledger)
    assert size == built_ledger.size
    # the request's imprint is SHA-256 of the checkpoint's signed text, nothing else
    [query] = authority.requests
    assert b"\x04\x20" + hashlib.sha256(_signed_text(note)).digest() in query  # the imprint's OCTET STRING
    (authority.directory / "query.der").write_bytes(query)
    shown = [openssl(), "ts", "-query", "-in", str(authority.directory / "query.der"), "-text"]
    text = subprocess.run(shown, capture_output=True, text=True, check=True).stdout
    assert "Hash Algorithm: sha256" in text
    assert "Certificate required: yes" in text

    code, out = _run(capsys, "timestamp", "verify", "--ledger", built_ledger.url, "--tsa-cert", ca, "--json")
    assert code == 0, out
    [result] = out
    assert result["ok"]
    assert result["size"] == size
    assert result["tsa"] == "CN=Lineage Test TSA"
    assert result["gen_time"].endswith("Z")

    code, out = _run(capsys, "timestamp", "request", "--ledger", built_ledger.url, "--tsa-url", authority.url, "--json")
    assert (code, out["status"]) == (0, "already timestamped")
    assert len(authority.requests) == 1

    # the independent check: OpenSSL's own verifier accepts the stored token for this checkpoint's imprint
    token_file = authority.directory / "token.der"
    assert main(["timestamp", "export", "--ledger", built_ledger.url, "--size", str(size), "-o", str(token_file)]) == 0
    assert token_file.read_bytes() == token
    digest = hashlib.sha256(_signed_text(note)).hexdigest()
    verify = [openssl(), "ts", "-verify", "-in", str(token_file), "-token_in", "-digest", digest]
    verify += ["-CAfile", ca, "-untrusted", str(authority.tsa_cert)]
    done = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Verification: OK" in done.stdout
    other_digest = hashlib.sha256(_signed_text(note).replace(b"\n", b"\n\n", 1)).hexdigest()
    verify[verify.index(digest)] = other_digest
    assert subprocess.run(verify, capture_output=True, check=False).returncode != 0


def _flip(token: bytes, where: str, note: str, tsa_cert: Path | None = None) -> bytes:
    """``token`` with one bit flipped: in the signature (its last bytes), the imprint, or the TSA's
    certificate the token carries."""
    imprint = hashlib.sha256(_signed_text(note)).digest()
    if where == "certificate":
        assert tsa_cert is not None
        der = x509.load_pem_x509_certificate(tsa_cert.read_bytes()).public_bytes(Encoding.DER)
        assert token.count(der) == 1
        position = token.index(der) + len(der) // 2
    else:
        position = {"signature": len(token) - 3, "imprint": token.index(imprint) + 5}[where]
    flipped = bytearray(token)
    flipped[position] ^= 0x01
    return bytes(flipped)


@pytest.mark.parametrize("where", ["signature", "imprint", "certificate"])
def test_a_token_with_a_flipped_byte_fails(
    built_ledger: BuiltLedger, authority: Authority, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    assert main(["timestamp", "request", "--ledger", built_ledger.url, "--tsa-url", authority.url]) == 0
    size, note, token = _stored(built_ledger)
    anchors = load_tsa_anchors(authority.ca_cert)
    verify_timestamp(token, note, anchors)
    with pytest.raises(SignatureError):
        verify_timestamp(_flip(token, where, note, authority.tsa_cert), note, anchors)

    _replace_token(built_ledger, size, _flip(token, where, note, authority.tsa_cert))
    ca = str(authority.ca_cert)
    code, out = _run(capsys, "timestamp", "verify", "--ledger", built_ledger.url, "--tsa-cert", ca, "--json")
    assert code == 1
    assert not out[0]["ok"]
    code, out = _run(capsys, "verify", "--ledger", built_ledger.url, "--tsa-cert", ca, "--json")
    assert code == 1
    assert out["ok"] is False
    assert not out["timestamps"][0]["ok"]


def test_a_token_of_another_checkpoint_or_from_another_tsa_fails(
    built_ledger: BuiltLedger, authority: Authority, other_authority: Authority
) -> None:
    assert main(["timestamp", "request", "--ledger", built_ledger.url, "--tsa-url", authority.url]) == 0
    size, note, token = _stored(built_ledger)
    store = open_store(built_ledger.url, readonly=True)
    try:
        earlier = store.checkpoints()[0]
    finally:
        store.close()
    assert earlier.size < size
    with pytest.raises(SignatureError, match="imprint"):
        verify_timestamp(token, earlier.note, load_tsa_anchors(authority.ca_cert))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_timestamp(token, note, load_tsa_anchors(other_authority.ca_cert))


def test_an_evidence_bundle_carries_the_timestamp_and_is_checked_with_the_tsa_root(
    built_ledger: BuiltLedger, authority: Authority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["timestamp", "request", "--ledger", built_ledger.url, "--tsa-url", authority.url]) == 0
    _, note, token = _stored(built_ledger)
    bundle_file = tmp_path / "bundle.json"
    assert main(["evidence", "export", token_id("t-1"), "--ledger", built_ledger.url, "-o", str(bundle_file)]) == 0
    bundle = json.loads(bundle_file.read_bytes())
    assert base64.b64decode(bundle["timestamp"]) == token
    assert bundle["checkpoint"] == note

    key, ca = str(built_ledger.verifier), str(authority.ca_cert)
    code, out = _run(capsys, "evidence", "verify", str(bundle_file), "--key", key, "--tsa-cert", ca, "--json")
    assert code == 0, out
    assert out["ok"] is True
    assert out["timestamp"]["ok"] is True
    assert out["timestamp"]["gen_time"].endswith("Z")
    code, out = _run(capsys, "evidence", "verify", str(bundle_file), "--key", key)  # no anchor: not checked
    assert code == 0, out

    # a token for another message in the bundle: the bundle fails with the TSA anchor given
    other = authority.directory / "other.json"
    bundle["timestamp"] = base64.b64encode(_flip(token, "imprint", note)).decode()
    other.write_text(json.dumps(bundle))
    code, out = _run(capsys, "evidence", "verify", str(other), "--key", key, "--tsa-cert", ca, "--json")
    assert code == 1
    assert out["ok"] is False
    assert out["timestamp"]["ok"] is False

    del bundle["timestamp"]
    other.write_text(json.dumps(bundle))
    code, out = _run(capsys, "evidence", "verify", str(other), "--key", key, "--tsa-cert", ca, "--json")
    assert code == 1
    assert out["timestamp"] == {"ok": False, "problem": "the bundle holds no timestamp of its checkpoint"}


def test_a_token_that_does_not_verify_under_the_configured_anchor_is_not_stored(
    built_ledger: BuiltLedger, authority: Authority, other_authority: Authority, capsys: pytest.CaptureFixture[str]
) -> None:
    request = ["timestamp", "request", "--ledger", built_ledger.url, "--tsa-url", authority.url]
    assert main([*request, "--tsa-cert", str(other_authority.ca_cert)]) != 0
    assert "does not verify" in capsys.readouterr().err
    assert len(authority.requests) == 1  # the TSA answered; its token was refused
    store = open_store(built_ledger.url, readonly=True)
    try:
        assert store.timestamped_sizes() == []
    finally:
        store.close()
    capsys.readouterr()
    assert main(["timestamp", "verify", "--ledger", built_ledger.url, "--tsa-cert", str(authority.ca_cert)]) != 0
    assert "no timestamp" in capsys.readouterr().err  # nothing to verify
    assert main([*request, "--tsa-cert", str(authority.ca_cert)]) == 0


def test_an_unreachable_tsa_or_a_missing_anchor_file_is_a_clear_error(
    built_ledger: BuiltLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["timestamp", "request", "--ledger", built_ledger.url, "--tsa-url", "ftp://tsa.example/"])
    assert code != 0
    assert "tsa_url" in capsys.readouterr().err
    down = f"http://127.0.0.1:{free_port()}/tsr"
    assert main(["timestamp", "request", "--ledger", built_ledger.url, "--tsa-url", down]) != 0
    assert "cannot reach the TSA" in capsys.readouterr().err
    code = main(["timestamp", "verify", "--ledger", built_ledger.url, "--tsa-cert", str(tmp_path / "absent.pem")])
    assert code != 0
    assert "absent.pem" in capsys.readouterr().err


def test_tsa_checks_that_do_not_apply_are_refused_not_skipped(
    built_ledger: BuiltLedger, authority: Authority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = str(authority.ca_cert)
    family = tmp_path / "family.json"
    export = ["evidence", "export", token_id("t-1"), "--ledger", built_ledger.url, "--family"]
    assert main([*export, "-o", str(family)]) == 0
    key = str(built_ledger.verifier)
    capsys.readouterr()
    assert main(["evidence", "verify", str(family), "--key", key, "--tsa-cert", ca]) != 0
    assert "evidence set carries no timestamp" in capsys.readouterr().err
    root = tmp_path / "sharded.db"
    assert main(["init", "--ledger", str(root), "--shards", "2"]) == 0
    capsys.readouterr()
    assert main(["verify", "--ledger", str(root), "--tsa-cert", ca]) != 0
    assert "--tsa-cert applies to one log" in capsys.readouterr().err

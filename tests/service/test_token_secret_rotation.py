"""Versions of the token fingerprint secret: ids that say their version (version 1 ids unchanged), a rotation
that keeps every earlier version, and a real ``lineage serve`` that looks raw tokens up under each version."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import TOKEN_SECRET_ENV_VAR
from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.lifecycle import NEVER_SEEN, TokenState
from lineage_ledger.core.model import decode_event
from lineage_ledger.errors import InputError, KeyringError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR
from lineage_ledger.service.auth import ApiKeyStore, load_token_secret
from lineage_ledger.token_secrets import load_token_secrets, merged_state, rotate_token_secret
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_event
from tests.service.serving import free_port, wait_healthy

LINEAGE = str(Path(sys.executable).parent / "lineage")
SECRET = b"0123456789abcdef0123456789abcdef"


def test_version_1_ids_keep_their_form_and_later_versions_say_theirs() -> None:
    digest = hmac.new(SECRET, b"raw-token", hashlib.sha256).hexdigest()
    assert token_fingerprint(SECRET, "raw-token") == digest
    assert token_fingerprint(SECRET, "raw-token", version=1) == digest
    assert token_fingerprint(SECRET, "raw-token", "eu-west-1", version=2) == f"eu-west-1:{digest}.v2"
    assert token_fingerprint(SECRET, "raw-token", version=12) == f"{digest}.v12"
    for bad in (0, -1, 10_000, True):
        with pytest.raises(InputError, match="version"):
            token_fingerprint(SECRET, "raw-token", version=bad)
    for token_id, ok in (
        (digest, True),
        (f"eu-west-1:{digest}.v2", True),
        (f"{digest}.v9999", True),
        (f"{digest}.v1", False),  # version 1 has one form only
        (f"{digest}.v02", False),
        (f"{digest}.v", False),
    ):
        if ok:
            event = decode_event(token_event("ISSUED", token_id, time.time_ns()))
            assert event.token_id == token_id  # type: ignore[union-attr]
        else:
            with pytest.raises(InputError, match="token_id"):
                token_event("ISSUED", token_id, time.time_ns())


def test_rotation_appends_a_version_and_keeps_the_earlier_ones(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db.secret"
    path.write_bytes(SECRET + b"\n")  # a secret file as every ledger has had one
    path.chmod(0o600)
    assert load_token_secrets(path).versions == (SECRET,)
    assert load_token_secret(path) == SECRET
    assert rotate_token_secret(path) == 2
    assert rotate_token_secret(path) == 3
    secrets = load_token_secrets(path)
    assert secrets.versions[0] == SECRET
    assert len(set(secrets.versions)) == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secrets.candidates("raw") == [
        token_fingerprint(secrets.versions[2], "raw", version=3),
        token_fingerprint(secrets.versions[1], "raw", version=2),
        token_fingerprint(SECRET, "raw"),
    ]
    assert secrets.fingerprint("raw") == secrets.candidates("raw")[0]
    assert SECRET.decode() not in repr(secrets)
    with pytest.raises(KeyringError, match="several versions"):
        load_token_secret(path)  # a one-secret reader must not take the lines for one secret
    path.write_bytes(SECRET + b"\n\nshort\n")
    with pytest.raises(KeyringError):
        load_token_secrets(path)


def test_merged_state_lets_any_version_end_the_token() -> None:
    issued = TokenState(state="ISSUED", issued_ns=10)
    revoked = TokenState(state="REVOKED", issued_ns=10)
    assert merged_state([NEVER_SEEN, issued]) == issued
    assert merged_state([issued, revoked]) == revoked
    assert merged_state([revoked, issued]) == revoked
    assert merged_state([NEVER_SEEN, NEVER_SEEN]) == NEVER_SEEN
    assert merged_state([]) == NEVER_SEEN


def lineage(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [LINEAGE, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False, env=_env()
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (DEFAULT_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR)}


@contextmanager
def serving(ledger: Path, log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [LINEAGE, "serve", "--ledger", str(ledger), "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def post_events(client: httpx.Client, key: str, *events: bytes) -> None:
    envelope = seal_batch(list(events), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    response = client.post("/v1/batches", content=envelope, headers=headers)
    assert response.status_code == 200, response.text


def test_a_running_server_looks_tokens_up_under_every_secret_version(tmp_path: Path) -> None:
    ledger = tmp_path / "served.db"
    log = tmp_path / "server.log"
    lineage("init", "--ledger", str(ledger))
    public = make_producer_signer().public_key.hex()
    lineage(
        "keys",
        "register",
        "--ledger",
        str(ledger),
        "--producer",
        PRODUCER,
        "--key-id",
        PRODUCER_KEY_ID,
        "--public-key",
        public,
    )
    keys = ApiKeyStore.load(f"{ledger}.apikeys.json")
    producer = keys.create("producer", PRODUCER)[1]
    auditor = {"Authorization": f"Bearer {keys.create('auditor')[1]}"}
    as_producer = {"Authorization": f"Bearer {producer}"}
    secret_file = Path(f"{ledger}.secret")
    now = time.time_ns()
    with serving(ledger, log) as url, httpx.Client(base_url=url, timeout=10.0) as client:  # creates the secret
        v1 = load_token_secrets(secret_file)
        post_events(
            client,
            producer,
            token_event("ISSUED", v1.fingerprint("spans"), now),
            token_event("ISSUED", v1.fingerprint("stays"), now),
        )

    version = json.loads(lineage("token-secret", "rotate", "--ledger", str(ledger), "--json"))["version"]
    assert version == 2
    both = load_token_secrets(secret_file)
    ids = json.loads(
        lineage("fingerprint", "--secret-file", str(secret_file), "--all-versions", "--json", stdin="spans\n")
    )
    assert ids["token_ids"] == both.candidates("spans")
    assert ids["token_id"].endswith(".v2")
    assert ids["token_ids"][1] == v1.fingerprint("spans")  # the id recorded before the rotation

    with serving(ledger, log) as url, httpx.Client(base_url=url, timeout=10.0) as client:
        # a producer on the new version records the token that spans the rotation under its new id
        post_events(client, producer, token_event("USED", both.fingerprint("spans"), now + 1_000_000))
        for raw in ("spans", "stays"):
            answer = client.post("/v1/introspect", data={"token": raw}, headers=as_producer).json()
            assert answer["active"] is True, raw
        assert client.post("/v1/introspect", data={"token": "never"}, headers=as_producer).json() == {"active": False}
        timeline = client.get(f"/v1/tokens/{both.fingerprint('spans')}/timeline", headers=auditor)
        assert timeline.status_code == 200, timeline.text

        for raw in ("spans", "stays"):
            assert client.post("/v1/revoke", data={"token": raw}, headers=as_producer).status_code == 200
            assert client.post("/v1/introspect", data={"token": raw}, headers=as_producer).json() == {"active": False}
        # each revocation went to the id the token's lifecycle is under: where it was issued, before the rotation
        spans = client.get(f"/v1/tokens/{v1.fingerprint('spans')}/timeline", headers=auditor).json()
        stays = client.get(f"/v1/tokens/{v1.fingerprint('stays')}/timeline", headers=auditor).json()
    assert "REVOKED" in json.dumps(spans)
    assert "REVOKED" in json.dumps(stays)
    report = json.loads(lineage("verify", "--ledger", str(ledger), "--json"))
    assert report["ok"], report["problems"]


def test_the_middleware_fingerprints_under_the_version_it_is_given() -> None:
    from tests.emitter.helpers import SECRET as MIDDLEWARE_SECRET
    from tests.emitter.helpers import RecordingSink
    from tests.emitter.test_middleware import TOKEN, _asgi, _auth

    sink = RecordingSink()
    _asgi(sink, token_secret_version=3).get("/orders/1", headers=_auth())
    _asgi(sink).get("/orders/1", headers=_auth())
    versioned, plain = sink.events
    assert versioned.token_id == token_fingerprint(MIDDLEWARE_SECRET, TOKEN, version=3)
    assert versioned.token_id.endswith(".v3")
    assert plain.token_id == token_fingerprint(MIDDLEWARE_SECRET, TOKEN)
    with pytest.raises(InputError, match="version"):
        _asgi(sink, token_secret_version=0)

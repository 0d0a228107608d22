"""``lineage serve`` as a real process over a ledger made with the CLI, for tests that need the whole
server (its logging, its store files, its process) and not the app in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from lineage_ledger.cli.main import TOKEN_SECRET_ENV_VAR, main
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR
from lineage_ledger.service.auth import ApiKeyStore
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.service.test_server import Server, free_port, wait_healthy


def make_ledger(ledger: Path, capsys: pytest.CaptureFixture[str] | None = None) -> None:
    """``lineage init`` the ledger and register the test producer's key (``capsys``: forget their output)."""
    assert main(["init", "--ledger", str(ledger)]) == 0
    public = make_producer_signer().public_key.hex()
    register = ["keys", "register", "--ledger", str(ledger), "--producer", PRODUCER, "--key-id", PRODUCER_KEY_ID]
    assert main([*register, "--public-key", public]) == 0
    if capsys is not None:
        capsys.readouterr()


def api_keys(ledger: Path) -> dict[str, str]:
    """``Authorization`` headers of a new API key per role (the producer's for the test producer)."""
    store = ApiKeyStore.load(f"{ledger}.apikeys.json")
    keys = {
        "producer": store.create("producer", PRODUCER)[1],
        "auditor": store.create("auditor")[1],
        "admin": store.create("admin")[1],
    }
    return {role: f"Bearer {key}" for role, key in keys.items()}


@contextmanager
def serving(ledger: Path, output: Path, extra: Sequence[str] = ()) -> Iterator[Server]:
    """``lineage serve`` on ``ledger`` (stdout and stderr into ``output``) until the block ends; killed if
    it has not stopped by then."""
    env = {k: v for k, v in os.environ.items() if k not in (DEFAULT_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR)}
    port = free_port()
    script = Path(sys.executable).parent / "lineage"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [str(script), "serve", "--ledger", str(ledger), "--port", str(port), *extra],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    served = Server(f"http://127.0.0.1:{port}", process, ledger, output)
    try:
        wait_healthy(served.url, process, output)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

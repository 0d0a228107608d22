"""``lineage serve`` as a real process over a ledger made with the CLI, for tests that need the whole
server (its logging, its store files, its process) and not the app in-process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import TOKEN_SECRET_ENV_VAR, main
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR
from lineage_ledger.service.auth import ApiKeyStore
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer

STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url``/healthz until it answers 200; AssertionError with the server's log if the process exits
    or STARTUP_SECONDS pass first."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no /healthz within {STARTUP_SECONDS} s:\n{log.read_text()}"
        time.sleep(0.05)  # polling a condition with a deadline


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    ledger: Path
    output: Path

    def stop(self) -> int:
        """SIGINT, as Ctrl-C would; uvicorn shuts down gracefully. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
                raise
        return self.process.returncode


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

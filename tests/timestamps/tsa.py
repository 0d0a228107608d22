"""A real RFC 3161 Time Stamping Authority on loopback: OpenSSL's ``ts -reply`` behind a tiny HTTP server.

The fixture makes a root CA and a TSA certificate issued by it (extendedKeyUsage critical timeStamping) with
``openssl req``/``x509``, then answers each ``application/timestamp-query`` POST by piping the request DER to
``openssl ts -reply`` and returning its ``application/timestamp-reply``. Without openssl the tests that need
it skip, or fail with ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_CONFIG = """\
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.55555.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

_TSA_EXTENSIONS = """\
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
"""


def openssl() -> str:
    """The openssl binary (skip, or fail with CI=true, if absent)."""
    found = shutil.which("openssl")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed (Debian: apt-get install openssl)")
        pytest.skip("openssl is not installed")
    return found


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([openssl(), *args], cwd=cwd, check=True, capture_output=True)


def make_authority(directory: Path, name: str = "Lineage Test TSA") -> Path:
    """A root CA and a TSA certificate issued by it in ``directory``; returns the config for ``ts -reply``."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _run(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650", "-subj", f"/CN={name} Root",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _run("req", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", f"/CN={name}", cwd=directory)
    (directory / "tsa.ext").write_text(_TSA_EXTENSIONS)
    _run(
        "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2", "-days", "3650",
        "-extfile", "tsa.ext", "-out", "tsa.pem",
        cwd=directory,
    )  # fmt: skip
    (directory / "serial").write_text("01\n")
    config = directory / "tsa.cnf"
    config.write_text(_CONFIG.format(dir=directory))
    return config


@dataclass
class Authority:
    """A running TSA: its URL, its root CA certificate (the trust anchor), its own certificate, its files."""

    url: str
    ca_cert: Path
    tsa_cert: Path
    directory: Path
    requests: list[bytes]


class _Handler(BaseHTTPRequestHandler):
    config: Path
    requests: list[bytes]
    lock: threading.Lock

    def do_POST(self) -> None:
        query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Type") != "application/timestamp-query":
            self.send_error(415)
            return
        self.requests.append(query)
        with self.lock, tempfile.TemporaryDirectory(dir=self.config.parent) as work:
            (Path(work) / "query.der").write_bytes(query)
            done = subprocess.run(
                [
                    openssl(),
                    "ts",
                    "-reply",
                    "-config",
                    str(self.config),
                    "-queryfile",
                    "query.der",
                    "-out",
                    "reply.der",
                ],
                cwd=work,
                capture_output=True,
                check=False,
            )
            reply = (Path(work) / "reply.der").read_bytes() if done.returncode == 0 else b""
        if not reply:
            self.send_error(500, done.stderr.decode(errors="replace")[:200])
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_authority(directory: Path, name: str = "Lineage Test TSA", port: int = 0) -> Generator[Authority, None, None]:
    """Make a TSA in ``directory`` (unless one is there) and serve it on a loopback port (``port``, or a free
    one) until the generator is closed."""
    config = directory / "tsa.cnf" if (directory / "tsa.cnf").exists() else make_authority(directory, name)
    requests: list[bytes] = []
    handler = type("Handler", (_Handler,), {"config": config, "requests": requests, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Authority(
            f"http://127.0.0.1:{server.server_address[1]}/tsr",
            directory / "ca.pem",
            directory / "tsa.pem",
            directory,
            requests,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[Authority]:
    """A running TSA on loopback."""
    yield from serve_authority(tmp_path / "tsa")

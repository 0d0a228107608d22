"""A real S3-compatible object store for the archive tests: tests/s3server (gofakes3 over a bolt file),
built by scripts/install-s3.sh, started on a free loopback port for the test session.

Absent binary: the tests skip, saying how to build it; with CI=true they fail instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["S3_BUCKET", "s3_endpoint"]

S3_BUCKET = "lineage-archive"
_HOME = Path(os.environ.get("LINEAGE_S3_HOME", Path.home() / ".cache" / "lineage-ledger" / "s3"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a running S3 server holding the bucket S3_BUCKET (credentials: any)."""
    binary = _HOME / "bin" / "s3server"
    if not binary.exists():
        reason = f"no S3 server at {binary}; `make test` builds it (scripts/install-s3.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so a missing service fails the run")
        pytest.skip(reason)
    port = _free_port()
    db = tmp_path_factory.mktemp("s3") / "objects.bolt"
    log = (db.parent / "s3server.log").open("wb")
    server = subprocess.Popen(
        [str(binary), "-addr", f"127.0.0.1:{port}", "-db", str(db), "-bucket", S3_BUCKET], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the S3 server did not start: {(db.parent / 's3server.log').read_text()}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()
        log.close()

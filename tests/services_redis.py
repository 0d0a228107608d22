"""A real, throwaway Redis server for tests, from Debian's redis-server package.

``redis_server`` (one per test process) starts ``redis-server`` on 127.0.0.1 with a free port, its working
directory in a fresh temporary directory and persistence off, waits for PING with bounded polling, and stops
it at the end of the session. ``redis_url`` gives each test a flushed database on it.

When ``redis-server`` (or the redis driver) is missing the tests skip, saying that ``make test`` installs it;
with ``CI=true`` they fail instead, so a CI run never passes by skipping its integrations.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.services import ServiceUnavailable, _free_port, _unavailable

__all__ = ["redis_server", "redis_url", "running_redis"]

_START_ATTEMPTS = 5
_READY_SECONDS = 20.0
_STOP_SECONDS = 10.0


def _answers_ping(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_redis() -> Iterator[str]:
    """A fresh Redis server on 127.0.0.1 for the duration of the block; yields its URL (database 0).

    Raises ServiceUnavailable when the redis driver or the ``redis-server`` binary is missing.
    """
    if importlib.util.find_spec("redis") is None:
        raise ServiceUnavailable("the redis driver is not installed (the [redis] extra)")
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable("redis-server is not on PATH")
    root = Path(tempfile.mkdtemp(prefix="lineage-redis-"))
    log = root / "server.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            url = f"redis://127.0.0.1:{port}/0"
            process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(root),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--logfile",
                    str(log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + _READY_SECONDS
            while process.poll() is None and not _answers_ping(url):
                if time.monotonic() > deadline:
                    _stop(process)
                    raise RuntimeError(f"Redis on port {port} did not answer PING in {_READY_SECONDS} s")
                time.sleep(0.02)
            if process.poll() is None:
                break
            # exited: most likely another process took the port between our probe and the server's bind
            text = log.read_text(errors="replace") if log.exists() else ""
            process = None
            if "Address already in use" not in text:
                raise RuntimeError(f"redis-server exited at start: {text[-2000:]}")
        if process is None:
            raise RuntimeError(f"redis-server could not bind a free port in {_START_ATTEMPTS} attempts")
        yield url
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The URL of a Redis server private to this test process (skip, or fail with CI=true, if absent)."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(running_redis())
        except ServiceUnavailable as e:
            _unavailable(str(e))
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """``redis_server`` with every key deleted first."""
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server

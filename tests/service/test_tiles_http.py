"""The tlog-tiles read API over real HTTP: ``lineage serve --public-log``, and a directory written by
``lineage publish`` behind a plain static web server, each read by this project's client (``lineage remote``)
and by Go's own transparency-log code (golang.org/x/mod/sumdb/tlog and sumdb/note, tests/interop/tlogtiles),
an implementation not written here. The ledger is past 65,536 entries, so level-2 tiles are exercised."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lineage_ledger.core.tiles import decode_bundle
from lineage_ledger.service.auth import ApiKeyStore
from lineage_ledger.store import open_store
from lineage_ledger.workload import generate
from tests.interop.test_go_interop import go_bin
from tests.service.serving import free_port, wait_healthy

LINEAGE = str(Path(sys.executable).parent / "lineage")
T0 = 1_796_115_600_000_000_000


@dataclass(frozen=True)
class Published:
    ledger: Path
    key: str
    sizes: list[int]
    """Every signed checkpoint's size, oldest first."""


def _latest_size(published: Published) -> int:
    """The size of the latest signed checkpoint now (a served ledger grows: serve records its own key)."""
    store = open_store(str(published.ledger), readonly=True)
    try:
        row = store.latest_checkpoint()
        assert row is not None
        return row.size
    finally:
        store.close()


def _wait_sealed(published: Published) -> None:
    """Until the served ledger has sealed what serve appended at start (its own key): bounded polling."""
    deadline = time.monotonic() + 30
    while True:
        store = open_store(str(published.ledger), readonly=True)
        try:
            row = store.latest_checkpoint()
            if row is not None and row.size == store.size():
                return
        finally:
            store.close()
        assert time.monotonic() < deadline, "serve did not seal its own entries within 30 s"
        time.sleep(0.1)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINEAGE, *argv], capture_output=True, text=True, check=False, timeout=600)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    folder = tmp_path_factory.mktemp("tiles")
    ledger = folder / "log.db"
    events = folder / "events.jsonl"
    workload = [body for _, _, body in generate(9_300, start_ns=T0).events]
    assert len(workload) > 66_000
    half = len(workload) // 2
    init = _run("init", "--ledger", str(ledger), "--json")
    assert init.returncode == 0, init.stderr
    for part in (workload[:half], workload[half:]):  # two runs: two signed sizes at least
        events.write_bytes(b"\n".join(part) + b"\n")
        done = _run("ingest", str(events), "--ledger", str(ledger), "--batch", "1000")
        assert done.returncode == 0, done.stderr
    store = open_store(str(ledger), readonly=True)
    try:
        sizes = [row.size for row in store.checkpoints()]
    finally:
        store.close()
    assert sizes[-1] > 65_536
    return Published(ledger, json.loads(init.stdout)["verifier_key"], sizes)


@pytest.fixture(scope="module")
def go_reader() -> Path:
    """tests/interop/tlogtiles, built by scripts/install-go-interop.sh (modules pinned by tests/interop/go.sum)."""
    return go_bin() / "tlogtiles"


@pytest.fixture
def served(published: Published, tmp_path: Path) -> Iterator[str]:
    yield from _serve(published, tmp_path, "--public-log")


def _serve(published: Published, tmp_path: Path, *flags: str) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [LINEAGE, "serve", "--ledger", str(published.ledger), "--port", str(port), *flags],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        _wait_sealed(published)
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)


def _go(go_reader: Path, url: str, published: Published, *indices: int) -> dict[str, object]:
    olds = [str(s) for s in published.sizes[:-1] if s > 0]
    done = subprocess.run(
        [str(go_reader), url, published.key, *(str(i) for i in indices), "--old", *olds, "1", "255", "65536"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_a_public_log_is_read_by_anyone_through_tiles(published: Published, served: str) -> None:
    checkpoint = httpx.get(f"{served}/checkpoint", timeout=10)
    assert checkpoint.status_code == 200
    assert checkpoint.headers["content-type"] == "text/plain; charset=utf-8"
    assert checkpoint.text.splitlines()[1] == str(_latest_size(published))
    tile = httpx.get(f"{served}/tile/0/000", timeout=10)
    assert (tile.status_code, len(tile.content)) == (200, 8192)
    assert "immutable" in tile.headers["cache-control"]
    assert tile.headers["content-type"] == "application/octet-stream"
    level2 = httpx.get(f"{served}/tile/2/000.p/1", timeout=10)
    assert (level2.status_code, len(level2.content)) == (200, 32)
    raw = httpx.get(f"{served}/tile/entries/001", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert raw.status_code == 200
    bundle = decode_bundle(raw.content)  # httpx undid the gzip Content-Encoding
    store = open_store(str(published.ledger), readonly=True)
    try:
        assert bundle == [row.body for row in store.entries(256, 512)]
    finally:
        store.close()
    with httpx.stream("GET", f"{served}/tile/entries/001", headers={"Accept-Encoding": "gzip"}) as answer:
        assert answer.headers["content-encoding"] == "gzip"
        assert gzip.decompress(b"".join(answer.iter_raw())) == raw.content
    past = _latest_size(published) // 256 + 1
    assert httpx.get(f"{served}/tile/0/{past:03d}", timeout=10).status_code == 404
    assert httpx.get(f"{served}/tile/0/0001", timeout=10).status_code in (400, 422)


def test_lineage_remote_checks_a_served_log(published: Published, served: str, tmp_path: Path) -> None:
    audit = _run("remote", "checkpoint", served, "--key", published.key, "--check-tree", "--json")
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["size"] == _latest_size(published)
    entry = _run("remote", "entry", served, "66500", "--key", published.key, "--json")
    assert entry.returncode == 0, entry.stderr
    store = open_store(str(published.ledger), readonly=True)
    try:
        assert json.loads(entry.stdout)["entry"].encode() == store.entry(66_500).body
        old_note = next(row.note for row in store.checkpoints() if row.size == published.sizes[0])
    finally:
        store.close()
    trusted = tmp_path / "trusted.checkpoint"
    trusted.write_text(old_note, "utf-8")
    extends = _run("remote", "consistency", served, "--key", published.key, "--trusted-checkpoint", str(trusted))
    assert extends.returncode == 0, extends.stderr
    assert f"extends the trusted checkpoint of size {published.sizes[0]}" in extends.stdout
    other = "other.example+00000000+" + "A" * 44
    wrong = _run("remote", "checkpoint", served, "--key", other)
    assert wrong.returncode == 3, wrong.stderr


def test_go_sumdb_tlog_reads_the_served_log(published: Published, served: str, go_reader: Path) -> None:
    last = _latest_size(published) - 1
    report = _go(go_reader, served, published, 0, 255, 256, 65_535, 65_536, last)
    assert report["size"] == last + 1
    assert report["inclusion"] == [0, 255, 256, 65_535, 65_536, last]


def test_a_published_directory_behind_a_static_web_server(
    published: Published, go_reader: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    done = _run("publish", "--ledger", str(published.ledger), "--dir", str(site), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size"] == _latest_size(published)
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_listening(url, web)
        report = _go(go_reader, url, published, 1, 66_500)
        assert report["inclusion"] == [1, 66_500]
        remote = _run("remote", "entry", url, "12345", "--key", published.key, "--json")
        assert remote.returncode == 0, remote.stderr
        from_file = _run("remote", "checkpoint", site.as_uri(), "--key", published.key, "--check-tree")
        assert from_file.returncode == 0, from_file.stderr
    finally:
        web.kill()
        web.wait(timeout=10)


def _wait_listening(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:  # polling a condition, bounded by the deadline
        assert process.poll() is None, "the web server exited"
        try:
            httpx.get(f"{url}/checkpoint", timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the web server did not listen within 30 s"
            time.sleep(0.05)


def test_a_private_log_needs_an_auditor_key(published: Published, tmp_path: Path) -> None:
    for url in _serve(published, tmp_path):
        assert httpx.get(f"{url}/checkpoint", timeout=10).status_code == 401
        keys = ApiKeyStore.load(f"{published.ledger}.apikeys.json")
        auditor = {"Authorization": f"Bearer {keys.create('auditor')[1]}"}
        producer = {"Authorization": f"Bearer {keys.create('producer', 'svc-x')[1]}"}
        assert httpx.get(f"{url}/tile/0/000", headers=producer, timeout=10).status_code == 403
        assert httpx.get(f"{url}/tile/0/000", headers=auditor, timeout=10).status_code == 200

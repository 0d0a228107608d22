"""An emitter whose spool's disk is full: back-pressure, never a silent drop, never a false sync().

The spool lives on a real small volume: a 1 MiB tmpfs mounted for the test when it runs as root (CI does),
otherwise a process whose files may not grow past 1 MiB (RLIMIT_FSIZE: the kernel refuses the write with
EFBIG). Either way the kernel refuses the spool's writes; nothing is simulated in the emitter. The emitter
runs in its own process (tests/emitter/spool_full_child.py) against the stand-in ledger server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PRODUCER
from tests.emitter.helpers import WAIT_S, create_ledger, recorded_events, sequence
from tests.emitter.test_cli_emit import API_KEY, ROOT, Server, _free_port

VOLUME_BYTES = 1024 * 1024
EVENTS = 6000  # about 2 MiB of spool records: twice what the volume holds


@dataclass(frozen=True)
class SmallVolume:
    """A directory on a full-able volume, and the file size limit to give the child if it is not a mount."""

    path: Path
    file_size_limit: int | None


def _mount_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={VOLUME_BYTES},mode=0700", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[SmallVolume]:
    target = tmp_path / "volume"
    target.mkdir()
    if not _mount_tmpfs(target):
        yield SmallVolume(target, VOLUME_BYTES)
        return
    try:
        yield SmallVolume(target, None)
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_full_disk_is_back_pressure_and_loses_nothing(small_volume: SmallVolume, tmp_path: Path) -> None:
    create_ledger(tmp_path / "ledger.db")
    ledger = Server(tmp_path / "ledger.db", _free_port(), tmp_path / "server.err")
    command = [sys.executable, "-m", "tests.emitter.spool_full_child", str(small_volume.path / "spool")]
    command += [ledger.url, API_KEY, str(EVENTS)]
    if small_volume.file_size_limit is not None:
        command.append(str(small_volume.file_size_limit))
    child = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        # Phase 1, the ledger down and the volume full.
        line = child.stdout.readline()
        assert line, child.communicate(timeout=WAIT_S)[1]
        full = json.loads(line)
        accepted = EVENTS - full["refused"]
        assert full["refused"] > 0, full  # emit() raised SpoolFullError: the caller kept those events
        assert full["refused_spool_full"] == full["refused"]
        assert full["sync"] == "SpoolFullError", full  # never True while events are not durable
        assert full["sync_block"] is False, full
        assert (full["spool_full"], full["dropped"], full["sent"]) == (1, 0, 0), full
        assert full["spool_write_failures"] >= 1
        assert f'lineage_emitter_spool_full{{producer="{PRODUCER}"}} 1.0' in full["scraped"]
        assert full["emitted"] == accepted == full["pending"] + full["queued"], full
        # Phase 2: the ledger comes back; the emitter frees its spool and takes the refused events again.
        ledger.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=WAIT_S * 6)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        ledger.stop()
    assert child.returncode == 0, err
    done = json.loads(out)
    assert (done["sync"], done["flush"], done["close"]) == (True, True, True), done
    assert (done["sent"], done["dropped"], done["dead_lettered"], done["spool_full"]) == (EVENTS, 0, 0, 0), done
    recorded = [item for item in sequence(recorded_events(tmp_path / "ledger.db")) if item[0] == "full"]
    assert sorted(recorded) == [("full", n) for n in range(EVENTS)]


def test_the_spool_state_is_a_prometheus_metric(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from lineage_ledger.emitter import Emitter, EmitterCollector
    from lineage_ledger.emitter.transport import HttpTransport
    from tests.conftest import PRODUCER_KEY_ID, make_producer_signer
    from tests.emitter.helpers import sequenced_event

    emitter = Emitter(
        PRODUCER,
        PRODUCER_KEY_ID,
        make_producer_signer(),
        HttpTransport(f"http://127.0.0.1:{_free_port()}"),
        spool_dir=tmp_path / "spool",
    )
    registry = CollectorRegistry()
    EmitterCollector(emitter).register(registry)
    for n in range(3):
        emitter.emit(sequenced_event("scraped", n))
    assert emitter.sync(timeout=WAIT_S)
    text = generate_latest(registry).decode()
    emitter.close(timeout=0)
    for line in (
        f'lineage_emitter_emitted_total{{producer="{PRODUCER}"}} 3.0',
        f'lineage_emitter_pending{{producer="{PRODUCER}"}} 3.0',
        f'lineage_emitter_spool_full{{producer="{PRODUCER}"}} 0.0',
        f'lineage_emitter_spool_write_failures_total{{producer="{PRODUCER}"}} 0.0',
        f'lineage_emitter_dropped_total{{producer="{PRODUCER}"}} 0.0',
    ):
        assert line in text.splitlines(), text


def test_lineage_emit_on_a_full_volume_stops_says_where_and_a_rerun_records_everything_once(
    small_volume: SmallVolume, tmp_path: Path
) -> None:
    from lineage_ledger.keys import write_signer_key
    from tests.conftest import PRODUCER_KEY_ID, make_producer_signer
    from tests.emitter.test_cli_emit import _jsonl

    create_ledger(tmp_path / "ledger.db")
    ledger = Server(tmp_path / "ledger.db", _free_port(), tmp_path / "server.err")
    key = tmp_path / "producer.key"
    write_signer_key(key, make_producer_signer())
    events = _jsonl(tmp_path / "events.jsonl", "cli-full", EVENTS)
    limit = small_volume.file_size_limit

    def emit(timeout: str) -> tuple[int, dict[str, object], str]:
        command = [str(Path(sys.executable).with_name("lineage")), "emit", "--url", ledger.url]
        command += ["--producer", PRODUCER, "--key", str(key), "--key-id", PRODUCER_KEY_ID, "--json"]
        command += ["--spool", str(small_volume.path / "spool"), "--timeout", timeout, str(events)]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=WAIT_S * 6,
            check=False,
            env={**os.environ, "LINEAGE_API_KEY": API_KEY},
            preexec_fn=None if limit is None else lambda: _limit_file_size(limit),
        )
        return done.returncode, json.loads(done.stdout), done.stderr

    # The ledger down: the run stops where the volume is full and says so; nothing is silently lost.
    code, summary, errors = emit("0.5")
    assert code == 3, errors
    stopped = summary["stopped_at_line"]
    assert isinstance(stopped, int), (summary, errors)
    assert 0 < stopped <= EVENTS
    assert f"stopped at line {stopped}" in errors
    assert (summary["sent"], summary["dead_lettered"]) == (0, 0), summary
    # The ledger back: the same file again records every event exactly once, and the run exits 0.
    ledger.start()
    try:
        code, summary, errors = emit(str(WAIT_S))
    finally:
        ledger.stop()
    assert code == 0, errors
    assert (summary["stopped_at_line"], summary["dropped"], summary["pending"]) == (None, 0, 0), summary
    recorded = [item for item in sequence(recorded_events(tmp_path / "ledger.db")) if item[0] == "cli-full"]
    assert sorted(recorded) == [("cli-full", n) for n in range(EVENTS)]


def _limit_file_size(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

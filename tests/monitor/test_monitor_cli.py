"""``lineage monitor`` as a real process against real servers: a healthy growing log passes round after
round; a ledger rolled back to an older copy (``lineage serve --public-log`` on the copy) is flagged, as is
the same copy grown past the newer one, while a witness refuses both; a fork (another ledger signed with
the same key and origin) is flagged; tampered tiles and entry bundles are flagged and the state does not
move. Alerts reach a real local webhook receiver and the Prometheus metrics."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.tiles import Tile
from tests.monitor.publishing import (
    LINEAGE,
    cli,
    copy_database,
    create,
    ingest,
    monitor,
    public_log,
    publish,
    static_server,
    verifier_key,
)
from tests.service.serving import free_port, wait_healthy


@contextmanager
def witness(tmp_path: Path, capsys: pytest.CaptureFixture[str], ledger: Path, vkey: str) -> Iterator[tuple[str, str]]:
    """``lineage witness serve`` for the log of ``vkey``: its URL and its cosigner verifier key."""
    key = tmp_path / "witness.key"
    # the witness commands take a --ledger they do not use; given so they do not look for ./lineage.db
    on = ("--ledger", str(ledger))
    wkey = cli(capsys, "witness", "init", *on, "--key", str(key), "--name", "witness.test/w1").strip()
    port = free_port()
    log = tmp_path / "witness.log"
    command = [LINEAGE, "witness", "serve", *on, "--key", str(key), "--state", str(tmp_path / "witness.db")]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--log", vkey, "--port", str(port)], stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield url, wkey
    finally:
        process.kill()
        process.wait(timeout=10)


def cosign(
    capsys: pytest.CaptureFixture[str], ledger: Path, url: str, wkey: str
) -> tuple[int, list[dict[str, object]]]:
    """``lineage witness cosign`` in process: its exit status and its outcomes."""
    capsys.readouterr()
    code = main(["witness", "cosign", "--ledger", str(ledger), "--witness", f"{url} {wkey}", "--json"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    return code, json.loads(out)


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    """A real HTTP server on loopback collecting the bodies POSTed to it."""
    bodies: list[bytes] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    server.shutdown()
    server.server_close()


def kinds(findings: list[dict[str, object]]) -> list[object]:
    return [f["kind"] for f in findings]


def metric(path: Path, name: str) -> float:
    for line in path.read_text().splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {path.read_text()}")


def test_a_healthy_growing_log_passes_round_after_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger, key, site = tmp_path / "a.db", tmp_path / "a.key", tmp_path / "site"
    create(capsys, ledger, key, 30, "first")
    vkey = verifier_key(capsys, ledger)
    state, metrics = tmp_path / "monitor.json", tmp_path / "monitor.prom"
    sizes: list[int] = []
    with static_server(site, tmp_path) as url:
        for round_ in range(4):
            publish(capsys, ledger, site)
            code, findings = monitor(url, vkey, state, "--metrics-file", str(metrics))
            assert code == 0, findings
            assert kinds(findings) == ["verified"]
            size = findings[0]["size"]
            assert isinstance(size, int)
            sizes.append(size)
            ingest(capsys, ledger, key, 7 + round_, f"more{round_}")
        code, findings = monitor(url, vkey, state, "--metrics-file", str(metrics))  # no growth, no promise
        assert code == 0
    assert sizes == sorted(set(sizes))
    assert metric(metrics, f'lineage_monitor_verified_size{{log="{url}"}}') == sizes[-1]
    assert metric(metrics, f'lineage_monitor_alerting{{log="{url}"}}') == 0
    assert json.loads(state.read_text())["checkpoint"].startswith(f"monitored.example/log\n{sizes[-1]}\n")


def test_a_rolled_back_database_is_flagged_and_the_witness_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], webhook: tuple[str, list[bytes]]
) -> None:
    ledger, key, backup = tmp_path / "ledger.db", tmp_path / "log.key", tmp_path / "backup.db"
    create(capsys, ledger, key, 12, "first")
    vkey = verifier_key(capsys, ledger)
    with witness(tmp_path, capsys, ledger, vkey) as (wurl, wkey):
        with public_log(ledger, key, tmp_path):
            pass  # serve registers its own key once; the backup below already holds it
        assert cosign(capsys, ledger, wurl, wkey)[0] == 0
        copy_database(ledger, backup)  # an older, internally consistent copy
        ingest(capsys, ledger, key, 9, "second")
        assert cosign(capsys, ledger, wurl, wkey)[0] == 0
        state, metrics = tmp_path / "monitor.json", tmp_path / "monitor.prom"
        watch = ("--witness-key", wkey, "--webhook", webhook[0], "--metrics-file", str(metrics))
        with public_log(ledger, key, tmp_path) as url:
            code, findings = monitor(url + "/", vkey, state, *watch)
        assert code == 0, findings
        newer = findings[-1]["size"]
        assert isinstance(newer, int)

        copy_database(backup, ledger)  # the operator restores the older copy and serves it
        with public_log(ledger, key, tmp_path) as url:
            code, findings = monitor(url + "/", vkey, state, *watch)
        assert code == 1
        assert kinds(findings) == ["rollback"], findings
        assert f"served after size {newer} was verified" in str(findings[0]["message"])
        assert [f["kind"] for f in json.loads(webhook[1][-1])["findings"]] == ["rollback"]
        assert metric(metrics, f'lineage_monitor_alerts_total{{kind="rollback",log="{url}/"}}') == 1
        assert metric(metrics, f'lineage_monitor_alerting{{log="{url}/"}}') == 1

        ingest(capsys, ledger, key, 30, "rewritten")  # and writes another history, longer than the first
        code, outcomes = cosign(capsys, ledger, wurl, wkey)
        assert code == 1  # the witness refuses: no consistency proof from what it cosigned holds
        assert outcomes[0]["status"] == "failed", outcomes
        with public_log(ledger, key, tmp_path) as url:
            code, findings = monitor(url + "/", vkey, state, *watch)
        assert code == 1
        assert kinds(findings)[0] == "fork", findings[0]["message"]
        assert "does not extend the verified one" in str(findings[0]["message"])
        assert "witness_quorum" in kinds(findings)  # the witness did not cosign the rewritten history
        assert json.loads(state.read_text())["checkpoint"].startswith(f"monitored.example/log\n{newer}\n")


def test_a_fork_signed_with_the_same_key_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, site = tmp_path / "log.key", tmp_path / "site"
    honest, forked = tmp_path / "honest.db", tmp_path / "forked.db"
    create(capsys, honest, key, 20, "honest")
    create(capsys, forked, key, 20, "forked")  # same key, same origin, same size, another history
    vkey = verifier_key(capsys, honest)
    assert verifier_key(capsys, forked) == vkey
    state = tmp_path / "monitor.json"
    with static_server(site, tmp_path) as url:
        publish(capsys, honest, site)
        assert monitor(url, vkey, state)[0] == 0
        (site / "checkpoint").unlink()
        publish(capsys, forked, site)  # the same URL now serves the other history to this monitor
        code, findings = monitor(url, vkey, state)
        assert code == 1
        assert kinds(findings) == ["fork"], findings
        assert "two signed roots for size" in str(findings[0]["message"])
        ingest(capsys, forked, key, 10, "later")
        publish(capsys, forked, site)
        code, findings = monitor(url, vkey, state)
        assert code == 1
        assert kinds(findings) == ["fork"], findings


@pytest.mark.parametrize("target", ["entries", "leaves"])
def test_a_tampered_tile_is_flagged_and_the_state_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    ledger, key, site = tmp_path / "a.db", tmp_path / "a.key", tmp_path / "site"
    create(capsys, ledger, key, 25, "first")
    vkey = verifier_key(capsys, ledger)
    state = tmp_path / "monitor.json"
    with static_server(site, tmp_path) as url:
        publish(capsys, ledger, site)
        assert monitor(url, vkey, state)[0] == 0
        ingest(capsys, ledger, key, 25, "second")
        publish(capsys, ledger, site)
        kept = state.read_bytes()
        size = int(json.loads(kept)["checkpoint"].split("\n")[1])
        grown = int((site / "checkpoint").read_text().split("\n")[1])
        path = site / Tile(None if target == "entries" else 0, 0, grown).path()
        original = path.read_bytes()
        at = 2 + 40 if target == "entries" else 32 * (size + 3) + 5  # inside an entry / a new leaf hash
        path.write_bytes(original[:at] + bytes([original[at] ^ 1]) + original[at + 1 :])
        code, findings = monitor(url, vkey, state)
        assert code == 1
        assert kinds(findings) == ["bad_tile"], findings
        assert state.read_bytes().count(b"\n") == kept.count(b"\n")
        assert json.loads(state.read_text())["checkpoint"] == json.loads(kept)["checkpoint"]
        path.write_bytes(original)
        code, findings = monitor(url, vkey, state)
        assert code == 0, findings
        assert findings[-1]["size"] == grown


def test_a_running_monitor_serves_its_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger, key, site = tmp_path / "a.db", tmp_path / "a.key", tmp_path / "site"
    create(capsys, ledger, key, 10, "first")
    vkey = verifier_key(capsys, ledger)
    publish(capsys, ledger, site)
    port, findings = free_port(), tmp_path / "findings.jsonl"
    command = [LINEAGE, "monitor", "--log", site.as_uri(), "--key", vkey, "--state", str(tmp_path / "s.json")]
    options = ["--interval", "3600", "--metrics-port", str(port), "--findings", str(findings)]
    process = subprocess.Popen([*command, *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # the first round, then an hour's wait: poll until the round is counted
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1.0).text
                if f'lineage_monitor_rounds_total{{log="{site.as_uri()}"}} 1.0' in text:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no round counted within 60 s"
            time.sleep(0.1)  # polling a condition with a deadline
    finally:
        process.kill()
        process.wait(timeout=10)
    size = int((site / "checkpoint").read_text().split("\n")[1])
    assert f'lineage_monitor_verified_size{{log="{site.as_uri()}"}} {float(size)}' in text
    assert f'lineage_monitor_alerts_total{{kind="fork",log="{site.as_uri()}"}} 0.0' in text
    assert [json.loads(line)["kind"] for line in findings.read_text().splitlines()] == ["verified"]

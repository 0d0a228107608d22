"""The ``lineage`` command as a person types it: where options go, which ledger is used, what a mistake says.

Options are honoured wherever they are given; only ``init`` and ``demo`` create a ledger; a malformed token
id is a usage error and an unknown one is NotFoundError (a proof of absence says that it is one); output cut
off by its reader ends quietly; every option says what it is for.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lineage_ledger.cli.main import _parser, main
from lineage_ledger.core.entry import PRODUCER_PATTERN
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR
from lineage_ledger.store import open_store
from tests.conftest import token_event, token_id
from tests.services import PostgresLedger, sql, with_database

REPO = Path(__file__).resolve().parents[2]
T0 = 1_763_000_000_000_000_000
S = 1_000_000_000
PARENT, CHILD, NEVER = (token_id(f"usage-{name}") for name in ("parent", "child", "never"))
MALFORMED = ("abc", "token:" + "A" * 64, "g" * 64, "eu west:" + "a" * 64)


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_KEY_ENV_VAR, raising=False)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """argparse's own refusal: exit status 2 and the message on standard error."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err


def events_file(path: Path) -> Path:
    events = [
        token_event("ISSUED", PARENT, T0, user_id="alice"),
        token_event("USED", PARENT, T0 + S, resource="/v1/profile", outcome="ALLOW"),
        token_event("ROTATED", CHILD, T0 + 2 * S, parent_token_id=PARENT),
        token_event("USED", CHILD, T0 + 3 * S, resource="/v1/cart", outcome="ALLOW"),
    ]
    path.write_bytes(b"".join(e + b"\n" for e in events))
    return path


def ledger_size(path: Path) -> int:
    store = open_store(str(path), readonly=True)
    try:
        return store.size()
    finally:
        store.close()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder as the current directory, as a new user starts."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def ledger(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """``lineage init --ledger ./lineage.db`` then ``lineage ingest events.jsonl``, as the README shows."""
    assert run(capsys, "init", "--ledger", "./lineage.db").code == 0
    result = run(capsys, "ingest", str(events_file(workdir / "events.jsonl")))
    assert result.code == 0, result.err
    return workdir / "lineage.db"


# -- item: the default ledger and where options may stand -----------------------------------------------------


def test_commands_without_ledger_use_the_documented_default(ledger: Path, workdir: Path) -> None:
    assert ledger_size(ledger) == 1 + 4 + 1  # the CLI's key, the four events, the seal
    assert not (workdir / "lineage-demo").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["query", "--ledger", "{ledger}", "timeline", PARENT, "--json"],
        ["query", "--json", "--ledger", "{ledger}", "timeline", PARENT],
        ["query", "--ledger", "{missing}", "timeline", PARENT, "--ledger", "{ledger}", "--json"],
        ["keys", "--ledger", "{ledger}", "--json", "list"],
        ["findings", "--json", "--ledger", "{ledger}", "scan"],
        ["evidence", "--json", "export", PARENT, "-o", "{out}", "--ledger", "{ledger}"],
        ["evidence", "--ledger", "{ledger}", "export", PARENT, "-o", "{out}", "--json"],
    ],
    ids=["ledger-before", "json-before", "last-wins", "keys", "findings", "evidence-json", "evidence-ledger"],
)
def test_an_option_given_before_the_subcommand_is_honoured(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    path = elsewhere / "ledger.db"
    assert run(capsys, "init", "--ledger", str(path)).code == 0
    assert run(capsys, "ingest", str(events_file(workdir / "e.jsonl")), "--ledger", str(path)).code == 0
    names = {"ledger": str(path), "missing": str(workdir / "missing.db"), "out": str(workdir / "b.json")}
    result = run(capsys, *(a.format(**names) for a in argv))
    assert result.code == 0, result.err
    answer = result.json()  # --json was honoured
    assert answer
    assert not (workdir / "lineage.db").exists()
    assert not (workdir / "lineage-demo").exists()


def test_evidence_verify_reads_no_ledger(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = run(capsys, "checkpoint", "--verifier-key").out.strip()
    bundle = ledger.parent / "parent.json"
    assert run(capsys, "evidence", "export", PARENT, "-o", str(bundle)).code == 0
    for argv in (["evidence"], ["evidence", "--ledger", str(ledger.parent / "nowhere.db")]):
        result = run(capsys, *argv, "verify", str(bundle), "--key", key, "--json")
        assert result.code == 0, result.err
        assert result.json()["count"] == 2
    assert not (ledger.parent / "nowhere.db").exists()


def test_help_documents_the_default_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["query", "timeline", "--help"])
    assert "(default ./lineage.db)" in capsys.readouterr().out


def test_demo_keeps_its_own_default_and_it_does_not_leak(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "demo", "--tokens", "40", "--json")
    assert result.code == 0, result.err
    assert (workdir / "lineage-demo" / "demo.db").exists()
    assert result.json()["ledger"] == "./lineage-demo/demo.db"
    after = run(capsys, "verify", "--json")  # the other commands' default is still ./lineage.db
    assert after.code == 2
    assert "./lineage.db" in after.err
    given = run(capsys, "demo", "--tokens", "40", "--ledger", str(workdir / "mine" / "demo.db"), "--json")
    assert given.code == 0, given.err
    assert (workdir / "mine" / "demo.db").exists()


# -- item: only init and demo create a ledger ------------------------------------------------------------------


READERS_AND_WRITERS: dict[str, list[str]] = {
    "ingest": ["ingest", "{events}"],
    "apikey": ["apikey", "create", "--role", "auditor"],
    "keys-register": ["keys", "register", "--producer", "svc-a", "--key-id", "svc-a-1", "--generate", "{dir}/a.key"],
    "keys-list": ["keys", "list"],
    "verify": ["verify"],
    "checkpoint": ["checkpoint"],
    "prove": ["prove", "1"],
    "trace": ["trace", PARENT],
    "query": ["query", "timeline", PARENT],
    "evidence": ["evidence", "export", PARENT, "-o", "{dir}/b.json"],
    "findings": ["findings", "scan"],
    "export": ["export", "prov", "--token-id", PARENT],
    "schemas": ["schemas", "list"],
    "collect": ["shards", "collect"],
    "serve": ["serve", "--port", "1"],
    "consume": ["consume", "--bootstrap", "127.0.0.1:1", "--topic", "t", "--idle-timeout", "0"],
}


@pytest.mark.parametrize("command", sorted(READERS_AND_WRITERS))
@pytest.mark.parametrize("form", ["path", "sqlite-url"])
def test_a_missing_ledger_is_refused_and_nothing_is_created(
    workdir: Path, capsys: pytest.CaptureFixture[str], command: str, form: str
) -> None:
    events = events_file(workdir / "events.jsonl")
    mistyped = "./lineage.bd" if form == "path" else "sqlite:///lineage.bd"
    argv = [a.format(events=events, dir=workdir) for a in READERS_AND_WRITERS[command]]
    before = sorted(p.name for p in workdir.iterdir())
    result = run(capsys, *argv, "--ledger", mistyped)
    assert result.code == 2, result.err
    assert f"no ledger at {mistyped}" in result.err
    assert "lineage init" in result.err
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_the_default_ledger_missing_is_named(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "ingest", str(events_file(workdir / "events.jsonl")))
    assert result.code == 2
    assert "no ledger at ./lineage.db" in result.err
    assert not (workdir / "lineage.db").exists()


def test_an_uninitialised_postgres_database_is_refused(
    postgres_server: str, postgres_ledger: PostgresLedger, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Provisioned (tables, roles) but never given ``lineage init``; and a database with no tables at all."""
    bare = f"bare_{postgres_ledger.database}"
    sql(postgres_server, f'CREATE DATABASE "{bare}"')
    try:
        events = str(events_file(workdir / "events.jsonl"))
        assert run(capsys, "init", "--ledger", str(workdir / "keys.db")).code == 0  # key files to sign with
        keys = ["--log-key", str(workdir / "keys.db.key"), "--producer-key", str(workdir / "keys.db.producer.key")]
        for url in (postgres_ledger.owner_url, with_database(postgres_server, bare)):
            for argv in (["ingest", events, *keys], ["query", "timeline", PARENT]):
                result = run(capsys, *argv, "--ledger", url)
                assert result.code == 2, result.err
                assert "no ledger at postgresql://" in result.err
        assert sql(postgres_ledger.owner_url, "SELECT count(*) FROM meta") == [(0,)]
        assert sql(postgres_ledger.owner_url, "SELECT count(*) FROM entries") == [(0,)]
    finally:
        sql(postgres_server, f'DROP DATABASE IF EXISTS "{bare}" WITH (FORCE)')


# -- item: malformed and unknown token ids -------------------------------------------------------------------


TOKEN_COMMANDS: dict[str, list[str]] = {
    "trace": ["trace", "{t}"],
    "timeline": ["query", "timeline", "{t}"],
    "family": ["query", "family", "{t}"],
    "blast-radius": ["query", "blast-radius", "{t}"],
    "since-refresh": ["query", "since-refresh", "{t}"],
    "state-at": ["query", "state-at", "{t}", "--at", str(T0 + 10 * S)],
    "policy-at": ["query", "policy-at", "--token-id", "{t}"],
    "export": ["export", "prov", "--token-id", "{t}"],
    "evidence": ["evidence", "export", "{t}", "-o", "{dir}/bundle.json"],
}


@pytest.mark.parametrize("command", sorted(TOKEN_COMMANDS))
@pytest.mark.parametrize("bad", MALFORMED, ids=["short", "upper", "not-hex", "bad-region"])
def test_a_malformed_token_id_is_a_usage_error(
    ledger: Path, capsys: pytest.CaptureFixture[str], command: str, bad: str
) -> None:
    argv = [a.format(t=bad, dir=ledger.parent) for a in TOKEN_COMMANDS[command]]
    err = usage_error(capsys, *argv)
    assert "not a token id" in err
    assert "64 lowercase hex digits" in err  # the form expected
    assert "no events" not in err


@pytest.mark.parametrize("command", sorted(set(TOKEN_COMMANDS) - {"evidence"}))
def test_an_unknown_token_id_is_not_found_everywhere(
    ledger: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = [a.format(t=NEVER, dir=ledger.parent) for a in TOKEN_COMMANDS[command]]
    for extra in ([], ["--json"]):
        result = run(capsys, *argv, *extra)
        assert result.code == 3, result.out
        assert "NotFoundError" in result.err
        assert NEVER in result.err
        assert result.out == ""


def test_known_tokens_still_answer(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same commands for a token the ledger holds (a child with its own events, and its parent)."""
    for command in sorted(set(TOKEN_COMMANDS) - {"evidence"}):
        for token in (PARENT, "token:" + CHILD):
            argv = [a.format(t=token, dir=ledger.parent) for a in TOKEN_COMMANDS[command]]
            result = run(capsys, *argv)
            assert result.code == 0, (command, result.err)


def test_evidence_for_an_unknown_token_says_it_is_a_proof_of_absence(
    ledger: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ledger.parent / "absent.json"
    shown = run(capsys, "evidence", "export", NEVER, "-o", str(out))
    assert shown.code == 0, shown.err
    assert "proof of absence" in shown.out
    assert "token:" + NEVER in shown.out
    summary = run(capsys, "evidence", "export", NEVER, "-o", str(out), "--json").json()
    assert (summary["entries"], summary["proof_of_absence"]) == (0, True)
    raw = run(capsys, "evidence", "export", NEVER, "-o", "-")
    assert json.loads(raw.out)["entries"] == []
    assert "proof of absence" in raw.err
    present = run(capsys, "evidence", "export", PARENT, "-o", str(out), "--json").json()
    assert (present["entries"], present["proof_of_absence"]) == (2, False)


# -- smaller items -------------------------------------------------------------------------------------------------


def test_version_and_python_dash_m(ledger: Path) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    for argv in (["-m", "lineage_ledger", "--version"], ["-m", "lineage_ledger.cli.main", "--version"]):
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"lineage {version}"
    done = subprocess.run(
        [sys.executable, "-m", "lineage_ledger", "query", "timeline", PARENT, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ledger.parent,
    )
    assert done.returncode == 0, done.stderr
    assert [r["event"]["event_type"] for r in json.loads(done.stdout)["answer"]] == ["ISSUED", "USED"]


def test_output_cut_off_by_its_reader_ends_quietly(ledger: Path) -> None:
    """``lineage ... --json | head``: the reader is gone before anything is written."""
    script = Path(sys.executable).parent / "lineage"
    for argv in (["query", "timeline", PARENT, "--json"], ["trace", PARENT], ["checkpoint"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run(
                [str(script), *argv],
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                check=False,
                cwd=ledger.parent,
            )
        finally:
            os.close(write_end)
        assert (done.returncode, done.stderr) == (141, ""), argv


def test_policy_at_needs_an_instant_or_a_token(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "query", "policy-at")
    assert "--at" in err
    assert "--token-id" in err
    assert "one of the arguments" in err


def test_a_missing_input_file_is_bad_input(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = run(capsys, "checkpoint", "--verifier-key").out.strip()
    for argv in (["ingest", "nothere.jsonl"], ["evidence", "verify", "nothere.json", "--key", key]):
        result = run(capsys, *argv)
        assert result.code == 2, result.err
        assert "nothere.json" in result.err
    assert ledger_size(ledger) == 6


def test_an_iso_time_in_an_event_names_the_hlc_format(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for iso in ("2026-12-01T09:30:00Z", "2026-12-01T09:30:00.123456+00:00", "2026-12-01T09:30:00.1234Z"):
        event = json.loads(token_event("USED", PARENT, T0 + 9 * S, resource="/v1/x", outcome="ALLOW"))
        event["occurred_at"] = iso
        bad = ledger.parent / "iso.jsonl"
        bad.write_text(json.dumps(event) + "\n", "utf-8")
        result = run(capsys, "ingest", str(bad))
        assert result.code == 2
        assert "line 1" in result.err
        assert "occurred_at" in result.err
        assert "HLC reading" in result.err
        assert "1763891234123456789.00000" in result.err  # an example of the form
        assert "Expected `str`" not in result.err


def test_apikey_messages_keep_their_brackets(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = run(capsys, "apikey", "create", "--role", "producer")
    assert missing.code == 2
    assert "--role producer needs --producer" in missing.err
    bad = run(capsys, "apikey", "create", "--role", "producer", "--producer", "Svc A")
    assert bad.code == 2
    assert PRODUCER_PATTERN in bad.err.replace("\n", "")


def test_counts_agree_with_their_nouns(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    family = run(capsys, "query", "family", CHILD)
    assert "2 tokens" in family.out
    blast = run(capsys, "query", "blast-radius", CHILD)
    assert "1 token, 1 resource" in blast.out
    resource = run(capsys, "query", "resource", "/v1/cart")
    assert "/v1/cart: 1 token" in resource.out
    assert "1 tokens" not in resource.out
    more = ledger.parent / "one.jsonl"
    more.write_bytes(token_event("USED", CHILD, T0 + 5 * S, resource="/v1/cart", outcome="ALLOW") + b"\n")
    assert "recorded 1 event (" in run(capsys, "ingest", str(more)).out


def test_tables_show_whole_token_ids(ledger: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    region = "eu-west-1:" + token_id("usage-regional")
    lines = [
        token_event("ISSUED", region, T0 + 20 * S, user_id="bob"),
        token_event("USED", region, T0 + 21 * S, resource="/v1/a-rather-long/resource/path/name", outcome="ALLOW"),
    ]
    (tmp_path / "r.jsonl").write_bytes(b"".join(e + b"\n" for e in lines))
    assert run(capsys, "ingest", str(tmp_path / "r.jsonl")).code == 0
    shown = run(capsys, "query", "resource", "/v1/a-rather-long/resource/path/name")
    assert shown.code == 0
    assert "token:" + region in shown.out  # on one line, uncut
    assert "…" not in shown.out
    trace = run(capsys, "trace", region)
    assert "…" not in trace.out
    at = datetime.datetime.fromtimestamp((T0 + 21 * S) // S, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert at in trace.out  # times are shown whole too, as RFC 3339


def _options(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"{path} {action.option_strings[0] if action.option_strings else action.dest}"
        for path, action in _options(_parser(), "lineage")
        if not action.help
    ]
    assert missing == []
    named = {f"{path} {a.option_strings[0]}" for path, a in _options(_parser(), "lineage") if a.option_strings}
    for option in (
        "lineage query blast-radius --start",
        "lineage query resource --end",
        "lineage query state-at --at",
        "lineage ingest --batch",
        "lineage demo --tokens",
        "lineage prove --consistency",
        "lineage fingerprint --secret-file",
        "lineage serve --host",
        "lineage serve --port",
    ):
        assert option in named  # and so it has help, by the assertion above

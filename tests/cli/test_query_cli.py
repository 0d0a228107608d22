"""``lineage query ...``, ``lineage findings scan`` and ``lineage export`` through the command line.

One ledger, built event by event with known indices and times and then closed, is read by every command.
``query`` runs through ``lineage_ledger.cli.main.main``; ``findings`` and ``export`` do too once main.py
registers them, and until then through a parser built here with the modules' own ``register``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lineage_ledger.cli import export as export_cli
from lineage_ledger.cli import findings as findings_cli
from lineage_ledger.cli.main import main
from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.merkle import leaf_hash, verify_inclusion
from lineage_ledger.core.note import Checkpoint, open_note, parse_verifier_key
from lineage_ledger.errors import InputError, LedgerError
from lineage_ledger.ledger.export import to_prov_json
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.store import open_store
from tests.conftest import token_id
from tests.ledger.test_findings import serve_receiver
from tests.ledger.test_lineage import Book, at, content_hash, hlc

RAW, CLEAN = "s3://lake/raw/cli.parquet", "warehouse.cli_clean"


@dataclass(frozen=True)
class Built:
    path: Path
    verifier_key: str
    checkpoint_size: int
    t: dict[str, str]
    at: dict[str, int]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("query-cli") / "ledger.db"
    book = Book(path)
    t = {n: token_id(f"cli-query-{n}") for n in ("R", "C", "X", "G")}
    i: dict[str, int] = {}
    i["v1"] = book.policy("api", "v1", 0, {"allow": ["read", "write"]})
    i["iR"] = book.token("ISSUED", t["R"], 10, user_id="dana", ip="10.0.0.1")
    i["uR"] = book.token("USED", t["R"], 12, resource="/v1/a", outcome="ALLOW", producer="svc-b")
    i["bC"] = book.token("REFRESHED", t["C"], 20, parent_token_id=t["R"])
    i["uC"] = book.token("USED", t["C"], 22, resource="/v1/b", outcome="ALLOW", producer="svc-b")
    i["v2"] = book.policy("api", "v2", 25, {"allow": ["read"]})
    i["rR"] = book.token("REVOKED", t["R"], 30)
    i["uC2"] = book.token("USED", t["C"], 32, resource="/v1/c", outcome="ALLOW", producer="svc-b")
    i["iX"] = book.token("ISSUED", t["X"], 33, user_id="erin")
    i["uX"] = book.token("USED", t["X"], 34, resource="/v1/a", outcome="ALLOW", producer="svc-b")
    i["gG"] = book.token("USED", t["G"], 35, resource="/v1/a", outcome="ALLOW", producer="svc-b")
    i["vR"] = book.token("USED", t["R"], 36, resource="/v1/d", outcome="ALLOW", producer="svc-b")
    i["cRaw"] = book.data("CREATED", RAW, 40, output_hash=content_hash(RAW))
    i["tClean"] = book.data("TRANSFORMED", CLEAN, 41, inputs=[RAW], output_hash=content_hash(CLEAN))
    i["xClean"] = book.data("TRANSMITTED", CLEAN, 42, destination="https://crm.example.com/import")
    row = book.ledger.seal()
    assert row is not None
    i["pX"] = book.token("USED", t["X"], 50, resource="/v1/z", outcome="ALLOW", producer="svc-b")  # pending
    key = str(book.ledger.log_verifier())
    book.close()
    return Built(path, key, row.size, t, i)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _hooked(command: str) -> bool:
    """True once cli/main.py registers ``command``."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main([command, "--help"])
        except SystemExit as e:
            return e.code == 0
    return False


def _local_main(argv: Sequence[str]) -> int:
    """main()'s parsing and error mapping, for the modules not yet hooked into it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ledger", default="./lineage.db")
    common.add_argument("--json", action="store_true")
    common.add_argument("--log-key")
    parser = argparse.ArgumentParser(prog="lineage")
    sub = parser.add_subparsers(dest="command", required=True)
    findings_cli.register(sub, common)
    export_cli.register(sub, common)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InputError:
        return 2
    except LedgerError:
        return 3


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    capsys.readouterr()
    if argv[0] in {"findings", "export"} and not _hooked(argv[0]):
        code = _local_main(list(argv))
    else:
        code = main(list(argv))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def query(capsys: pytest.CaptureFixture[str], built: Built, *argv: str) -> Any:
    result = run(capsys, "query", *argv, "--ledger", str(built.path), "--json")
    assert result.code == 0, result.err
    return result.json()


# -- lineage query ----------------------------------------------------------------------------------------


def test_query_timeline_with_proofs(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    t, i = built.t, built.at
    got = query(capsys, built, "timeline", t["R"], "--proofs")
    expected = [i["iR"], i["uR"], i["rR"], i["vR"]]
    assert [r["index"] for r in got["answer"]] == expected
    assert [r["event"]["event_type"] for r in got["answer"]] == ["ISSUED", "USED", "REVOKED", "USED"]
    assert got["answer"][-1]["verdict"] == "token.use_after_revoke"
    assert got["evidence"] == expected
    proofs = got["proofs"]
    text, _ = open_note(proofs["checkpoint"], [parse_verifier_key(built.verifier_key)])
    cp = Checkpoint.from_text(text)
    assert cp.size == proofs["tree_size"] == built.checkpoint_size
    for index in expected:
        path = [bytes.fromhex(h) for h in proofs["inclusion"][str(index)]]
        verify_inclusion(leaf_hash(proofs["entries"][str(index)].encode()), index, cp.size, path, cp.root_hash)


def test_query_pending_evidence_is_listed(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    got = query(capsys, built, "timeline", built.t["X"], "--proofs")
    assert got["proofs"]["pending"] == [built.at["pX"]]
    assert set(got["proofs"]["inclusion"]) == {str(built.at["iX"]), str(built.at["uX"])}


def test_query_family_and_blast_radius(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    t, i = built.t, built.at
    fam = query(capsys, built, "family", t["C"])["answer"]
    assert fam == {
        "root": t["R"],
        "tokens": [t["R"], t["C"]],
        "edges": [{"parent": t["R"], "child": t["C"], "kind": "REFRESHED", "index": i["bC"]}],
    }
    got = query(capsys, built, "blast-radius", t["R"], "--start", hlc(12), "--end", hlc(32))
    assert [u["index"] for u in got["answer"]["uses"]] == [i["uR"], i["uC"]]  # 32 s is outside
    assert got["answer"]["resources"] == ["/v1/a", "/v1/b"]
    assert got["answer"]["tokens"] == [t["R"], t["C"]]
    assert got["evidence"] == [i["uR"], i["uC"]]


def test_query_since_refresh(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    got = query(capsys, built, "since-refresh", built.t["R"])
    assert got["answer"]["window"] == {"start": hlc(20), "end": hlc(30)}
    assert got["answer"]["resources"] == ["/v1/b"]
    assert got["evidence"] == [built.at["uC"]]


def test_query_resource_and_user_policies(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    t, i = built.t, built.at
    got = query(capsys, built, "resource", "/v1/a")
    assert got["answer"]["tokens"] == sorted([t["R"], t["X"], t["G"]])
    assert got["evidence"] == [i["uR"], i["uX"], i["gG"]]
    windowed = query(capsys, built, "resource", "/v1/a", "--start", hlc(13), "--end", hlc(35))
    assert windowed["evidence"] == [i["uX"]]

    changes = query(capsys, built, "user-policies", "dana")
    assert [(c["policy"]["version"], c["tokens"]) for c in changes["answer"]] == [("v2", [t["R"]])]
    assert changes["evidence"] == [i["v2"]]
    assert query(capsys, built, "user-policies", "erin")["answer"] == []  # erin's token began after v2


def test_query_policy_at_and_state_at(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    t, i = built.t, built.at
    got = query(capsys, built, "policy-at", "--at", hlc(24))
    assert got["answer"]["policies"]["api"]["version"] == "v1"
    assert got["evidence"] == [i["v1"]]
    got = query(capsys, built, "policy-at", "--at", hlc(25))
    assert got["answer"]["policies"]["api"]["version"] == "v2"
    got = query(capsys, built, "policy-at", "--token-id", t["C"])
    assert (got["answer"]["at"], got["answer"]["policies"]["api"]["version"]) == (hlc(20), "v1")
    assert got["evidence"] == [i["bC"], i["v1"]]
    got = query(capsys, built, "policy-at", "--token-id", t["C"], "--event", "USED")
    assert got["answer"]["at"] == hlc(22)
    got = query(capsys, built, "policy-at", "--token-id", t["X"])
    assert got["answer"]["policies"]["api"]["version"] == "v2"

    assert query(capsys, built, "state-at", t["R"], "--at", hlc(29))["answer"]["state"] == "ISSUED"
    revoked = query(capsys, built, "state-at", t["R"], "--at", hlc(30))["answer"]
    assert (revoked["state"], revoked["issued_ns"]) == ("REVOKED", at(10))
    assert query(capsys, built, "state-at", t["C"], "--at", hlc(19))["answer"]["state"] == "NONE"


def test_query_upstream_and_downstream(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    i = built.at
    up = query(capsys, built, "upstream", CLEAN)
    edge = {"input": RAW, "output": CLEAN, "content_hash": content_hash(RAW), "index": i["tClean"]}
    assert up["answer"]["edges"] == [edge]
    assert up["evidence"] == [i["cRaw"], i["tClean"], i["xClean"]]
    down = query(capsys, built, "downstream", RAW)
    assert down["answer"]["edges"] == [edge]
    assert [s["index"] for s in down["answer"]["steps"]] == [i["tClean"], i["xClean"]]


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["timeline", "R"], "REVOKED"),
        (["family", "C"], "REFRESHED"),
        (["blast-radius", "R"], "/v1/b"),
        (["since-refresh", "R"], "/v1/b"),
        (["resource", "/v1/a"], "/v1/a"),
        (["user-policies", "dana"], "v2"),
        (["policy-at", "--at", "HLC25"], "v2"),
        (["state-at", "R", "--at", "HLC30"], "REVOKED"),
        (["upstream", CLEAN], RAW),
        (["downstream", RAW], CLEAN),
        (["timeline", "R", "--proofs"], "inclusion proofs"),
    ],
)
def test_query_human_output(capsys: pytest.CaptureFixture[str], built: Built, argv: list[str], shown: str) -> None:
    args = [built.t.get(a, a) for a in argv]
    args = [hlc(int(a[3:])) if a.startswith("HLC") else a for a in args]
    result = run(capsys, "query", *args, "--ledger", str(built.path))
    assert result.code == 0, result.err
    assert shown in result.out


def test_query_unknown_token_is_an_error(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    result = run(capsys, "query", "timeline", token_id("cli-never"), "--ledger", str(built.path), "--json")
    assert result.code == 3
    assert "NotFoundError" in result.err


# -- lineage findings -------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Any]:
    with serve_receiver(200) as server:
        yield server


def test_findings_scan_json_jsonl_and_webhook(
    capsys: pytest.CaptureFixture[str], built: Built, tmp_path: Path, receiver: Any
) -> None:
    t, i = built.t, built.at
    jsonl = tmp_path / "findings.jsonl"
    host, port = receiver.server_address
    result = run(
        capsys,
        "findings",
        "scan",
        "--ledger",
        str(built.path),
        "--json",
        "--jsonl",
        str(jsonl),
        "--webhook",
        f"http://{host}:{port}/siem",
    )
    assert result.code == 0, result.err
    got = result.json()
    found = [(f["rule"], f["subject"], f["indices"]) for f in got["findings"]]
    assert found == [
        ("token.use_after_ancestor_revoke", "token:" + t["C"], [i["rR"], i["uC2"]]),  # C derives from R
        ("token.use_without_issue", "token:" + t["G"], [i["gG"]]),
        ("token.use_after_revoke", "token:" + t["R"], [i["rR"], i["vR"]]),
    ]
    assert got["by_severity"] == {"low": 0, "medium": 0, "high": 1, "critical": 2}
    assert got["entries"] == i["pX"] + 1
    assert jsonl.read_bytes().splitlines() == [canonical_bytes(f) for f in got["findings"]]
    assert [json.loads(body) for _, _, body in receiver.received] == [{"findings": got["findings"]}]


def test_findings_scan_thresholds_and_exit_codes(
    capsys: pytest.CaptureFixture[str], built: Built, tmp_path: Path
) -> None:
    ledger = ["--ledger", str(built.path), "--json"]
    critical = run(capsys, "findings", "scan", *ledger, "--min-severity", "critical", "--fail-on", "critical")
    assert critical.code == 1
    assert [f["rule"] for f in critical.json()["findings"]] == [
        "token.use_after_ancestor_revoke",
        "token.use_after_revoke",
    ]

    unknown = run(capsys, "findings", "scan", *ledger, "--known-producer", "svc-a")
    flagged = {f["indices"][0] for f in unknown.json()["findings"] if f["rule"] == "producer.unknown"}
    assert flagged == {
        built.at[n] for n in ("uR", "uC", "uC2", "uX", "gG", "vR", "v1", "v2", "cRaw", "tClean", "xClean", "pX")
    }

    # svc-a spoke at 10, 20, 30 and 33 s; svc-b at most 12 s apart, last at 50 s
    i = built.at
    gap = run(capsys, "findings", "scan", *ledger, "--heartbeat", "svc-a=5", "--heartbeat", "svc-b=20")
    gaps = [f for f in gap.json()["findings"] if f["rule"] == "producer.heartbeat_gap"]
    assert {f["subject"] for f in gaps} == {"producer:svc-a"}
    assert [f["indices"] for f in gaps] == [[], [i["iR"]], [i["bC"]], [i["iX"]]]
    later = run(capsys, "findings", "scan", *ledger, "--heartbeat", "svc-b=20", "--now", str(at(100)))
    assert [(f["subject"], f["indices"], f["detected_at"]) for f in later.json()["findings"][-1:]] == [
        ("producer:svc-b", [i["pX"]], hlc(100))
    ]

    assert run(capsys, "findings", "scan", *ledger, "--heartbeat", "svc-a").code == 2
    assert run(capsys, "findings", "scan", *ledger, "--now", "yesterday").code == 2

    human = run(capsys, "findings", "scan", "--ledger", str(built.path))
    assert human.code == 0
    assert "token.use_after_revoke" in human.out
    first = human.out.splitlines()[0]
    assert first == "scanned 19 entries: 2 critical, 1 high (at or above medium)"  # the summary comes first


# -- lineage export ---------------------------------------------------------------------------------------


def _expected_family_items(built: Built, token: str) -> tuple[list[Any], Checkpoint]:
    store = open_store(str(built.path), readonly=True)
    try:
        lin = Lineage(store)
        fam = lin.family(token)
        records = lin.records(store.subject_entries(["token:" + t for t in fam.tokens]))
        note = store.latest_checkpoint()
        assert note is not None
        text, _ = open_note(note.note, [parse_verifier_key(built.verifier_key)])
        return [fam, *records], Checkpoint.from_text(text)
    finally:
        store.close()


def test_export_prov_to_a_file(capsys: pytest.CaptureFixture[str], built: Built, tmp_path: Path) -> None:
    from prov.model import ProvDocument

    out = tmp_path / "family.prov.json"
    argv = ["export", "prov", "--token-id", built.t["C"], "--ledger", str(built.path), "-o", str(out)]
    result = run(capsys, *argv, "--json", "--key", built.verifier_key)
    assert result.code == 0, result.err
    items, checkpoint = _expected_family_items(built, built.t["C"])
    assert out.read_bytes() == to_prov_json(items, checkpoint)
    assert result.json()["checkpoint_size"] == built.checkpoint_size
    doc = ProvDocument.deserialize(content=out.read_text("utf-8"), format="json")
    assert len(list(doc.bundles)) == 1
    again = tmp_path / "again.json"
    assert run(capsys, *argv[:-1], str(again)).code == 0
    assert again.read_bytes() == out.read_bytes()


def test_export_pictures_and_jsonl(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    t, i = built.t, built.at
    ledger = ["--ledger", str(built.path)]
    dot = run(capsys, "export", "dot", "--asset-id", CLEAN, *ledger)
    assert dot.code == 0, dot.err
    assert f'"asset:{RAW}" -> "asset:{CLEAN}" [label="TRANSFORMED @{i["tClean"]}"];' in dot.out

    mermaid = run(capsys, "export", "mermaid", "--token-id", t["R"], *ledger, "--json")
    assert mermaid.json()["content"].startswith("flowchart LR\n")
    assert f'-->|"REFRESHED @{i["bC"]}"|' in mermaid.json()["content"]

    jsonl = run(capsys, "export", "jsonl", "--token-id", t["R"], *ledger)
    indices = [json.loads(line)["index"] for line in jsonl.out.splitlines()]
    assert indices == sorted(i[n] for n in ("iR", "uR", "bC", "uC", "rR", "uC2", "vR"))


def test_export_errors(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    ledger = ["--ledger", str(built.path)]
    assert run(capsys, "export", "prov", "--token-id", token_id("cli-never"), *ledger).code == 3
    assert run(capsys, "export", "prov", "--asset-id", "no-such-asset", *ledger).code == 3
    other_key = "other.example/log+01234567+" + "A" * 44
    assert run(capsys, "export", "prov", "--token-id", built.t["R"], *ledger, "--key", other_key).code in {2, 3}

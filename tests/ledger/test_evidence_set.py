"""Evidence for a whole family or blast radius in one file (ledger.evidence_set), checked offline
(offline_set): every member bundle, one checkpoint, one family."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.errors import NotFoundError
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.ledger.evidence_set import export_evidence_set
from lineage_ledger.offline_set import verify_evidence_set
from lineage_ledger.store import open_store
from tests.cli.test_query_cli import run
from tests.conftest import token_id
from tests.ledger.test_lineage import Book, hlc


@dataclass(frozen=True)
class Built:
    path: Path
    key: str
    first_size: int
    t: dict[str, str]
    i: dict[str, int]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """R -REFRESHED-> C -ROTATED-> G -EXCHANGED-> X, and an unrelated U; sealed twice."""
    path = tmp_path_factory.mktemp("evidence-set") / "ledger.db"
    book = Book(path)
    t = {n: token_id(f"evidence-set-{n}") for n in "RCGXU"}
    i: dict[str, int] = {}
    book.token("ISSUED", t["R"], 0, user_id="dana")
    book.token("USED", t["R"], 1, resource="/a", outcome="ALLOW")
    i["bC"] = book.token("REFRESHED", t["C"], 2, parent_token_id=t["R"])
    book.token("USED", t["C"], 3, resource="/b", outcome="ALLOW")
    first = book.ledger.seal()
    assert first is not None
    i["bG"] = book.token("ROTATED", t["G"], 4, parent_token_id=t["C"])
    book.token("USED", t["G"], 5, resource="/c", outcome="ALLOW")
    i["bX"] = book.token("ISSUED", t["X"], 6, parent_token_id=t["G"])
    book.token("USED", t["X"], 7, resource="/d", outcome="ALLOW")
    book.token("ISSUED", t["U"], 8)
    book.ledger.seal()
    key = str(book.ledger.log_verifier())
    book.close()
    return Built(path, key, first.size, t, i)


def export(built: Built, token: str, kind: str, **kwargs: object) -> bytes:
    store = open_store(str(built.path), readonly=True)
    try:
        return export_evidence_set(store, token, kind, **kwargs)  # type: ignore[arg-type]
    finally:
        store.close()


def test_a_family_in_one_file(built: Built) -> None:
    t, i = built.t, built.i
    report = verify_evidence_set(export(built, t["G"], "family"), log_key=built.key)
    assert report.ok, report.problems
    assert report.scope["token_id"] == t["R"]  # the family's root
    assert [m.subject for m in report.members] == ["token:" + t[n] for n in "RCGX"]
    assert list(report.edges) == [
        (t["R"], t["C"], "REFRESHED", i["bC"]),
        (t["C"], t["G"], "ROTATED", i["bG"]),
        (t["G"], t["X"], "EXCHANGED", i["bX"]),
    ]
    assert all(m.complete for m in report.members)
    assert sorted({u[3] for u in report.uses}) == ["/a", "/b", "/c", "/d"]


def test_a_blast_radius_in_one_file_with_its_window(built: Built) -> None:
    t = built.t
    data = export(built, t["C"], "blast-radius", start=hlc(3), end=hlc(7))
    report = verify_evidence_set(data, log_key=built.key)
    assert report.ok, report.problems
    assert [m.subject for m in report.members] == ["token:" + t[n] for n in "CGX"]
    assert [u[3] for u in report.uses] == ["/b", "/c"]


def _tampered(data: bytes, change: object) -> bytes:
    value = json.loads(data)
    change(value)  # type: ignore[operator]
    return canonical_bytes(value)


def test_a_missing_link_an_altered_entry_or_a_second_checkpoint_fails(built: Built) -> None:
    t = built.t
    data = export(built, t["G"], "family")
    without_c = _tampered(data, lambda v: v["bundles"].pop(1))
    problems = verify_evidence_set(without_c, log_key=built.key).problems
    assert any(t["G"] in p and "does not descend" in p for p in problems)

    def alter(v: dict[str, object]) -> None:
        bundles = v["bundles"]
        assert isinstance(bundles, list)
        entry = bundles[2]["entries"][1]
        entry["entry"] = entry["entry"].replace('"/c"', '"/z"')

    assert not verify_evidence_set(_tampered(data, alter), log_key=built.key).ok

    store = open_store(str(built.path), readonly=True)
    try:
        older = json.loads(export_evidence(store, t["R"], size=built.first_size))
    finally:
        store.close()

    def swap(v: dict[str, object]) -> None:
        bundles = v["bundles"]
        assert isinstance(bundles, list)
        bundles[0] = older

    report = verify_evidence_set(_tampered(data, swap), log_key=built.key)
    assert any("one checkpoint" in p for p in report.problems)
    other_key = "other.example/log+01020304+" + "A" * 43 + "="
    assert not verify_evidence_set(data, log_key=other_key).ok
    with pytest.raises(NotFoundError):
        export(built, token_id("evidence-set-never"), "family")


def test_cli_exports_and_verifies_a_family(capsys: pytest.CaptureFixture[str], built: Built, tmp_path: Path) -> None:
    out = tmp_path / "family.evidence.json"
    ledger = ["--ledger", str(built.path)]
    made = run(capsys, "evidence", "export", built.t["X"], "--family", "-o", str(out), *ledger, "--json")
    assert made.code == 0, made.err
    assert made.json()["tokens"] == ["token:" + built.t[n] for n in "RCGX"]
    checked = run(capsys, "evidence", "verify", str(out), "--key", built.key)
    assert checked.code == 0, checked.out + checked.err
    assert "4 tokens" in checked.out
    out.write_bytes(_tampered(out.read_bytes(), lambda v: v["bundles"].pop(2)))
    assert run(capsys, "evidence", "verify", str(out), "--key", built.key).code == 1

"""The archive on an S3-compatible object store (a real server, tests/services_s3.py), as on a directory:
files written, read back and checked, queries across tiers, damage reported, expiry deleting the object."""

from __future__ import annotations

import json

import pytest

from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.archive.retention import DAY_NS, set_policy
from lineage_ledger.archive.writer import archive_ledger
from lineage_ledger.cli.main import main
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store
from tests.archive.helpers import NEW, OLD, SETTINGS, build
from tests.conftest import make_log_signer


def test_archive_to_s3_queries_verifies_and_expires(
    ledger_url: str, s3_archive: str, capsys: pytest.CaptureFixture[str]
) -> None:
    built = build(ledger_url)
    before = open_store(ledger_url, readonly=True)
    try:
        timeline = [r.body for r in before.subject_entries(["token:" + OLD])]
    finally:
        before.close()
    location = ArchiveLocation(s3_archive)
    with Ledger.open(ledger_url, make_log_signer(), settings=SETTINGS) as ledger:
        done = archive_ledger(ledger, location, built.cut, max_entries=1)
        set_policy(ledger, "s3-test", 1, 0, 1)
        ledger.seal()
    assert len(done) == 3
    assert location.files() == sorted(f.file for f in done)

    capsys.readouterr()
    assert main(["query", "timeline", OLD, "--ledger", ledger_url, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["tier"] == ["archive"]
    assert [r["index"] for r in answer["answer"]] == answer["evidence"]
    store = open_store(ledger_url, readonly=True)
    try:
        assert [r.body for r in store.subject_entries(["token:" + OLD])] == timeline
    finally:
        store.close()
    assert main(["verify", "--ledger", ledger_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    # an object overwritten in the bucket is caught, with its range
    damaged = done[1]
    data = bytearray(location.read(damaged.file))
    data[100] ^= 0xFF
    location.write(damaged.file, bytes(data))
    assert main(["verify", "--ledger", ledger_url, "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [p["message"].split(" (")[0] for p in problems] == [f"entries {damaged.first}..{damaged.last}"]

    # retention deletes the objects of the expired ranges, after recording them
    with Ledger.open(ledger_url, make_log_signer(), settings=SETTINGS) as ledger:
        from lineage_ledger.archive.retention import apply_retention

        _, expired = apply_retention(ledger, 10 * DAY_NS + int(ledger.now().split(".")[0]))
    assert [(e.first, e.last) for e in expired] == [(f.first, f.last) for f in done]
    assert location.files() == []
    assert main(["query", "timeline", NEW, "--ledger", ledger_url, "--json"]) == 0
    assert {e["policy"] for e in json.loads(capsys.readouterr().out)["expired"]} == {"s3-test"}

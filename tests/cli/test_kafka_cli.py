"""The sharded, Kafka-fed ledger from the command line: init --shards, emit --kafka, consume --shard,
shards collect, verify across shards, a token query routed to its shard, schemas list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineage_ledger.core.model import read_subject
from lineage_ledger.core.routing import shard_of
from lineage_ledger.kafka.avro import V1
from lineage_ledger.ledger.shards import layout_of, shard_url
from lineage_ledger.store import open_store
from tests.cli.test_cli import run, write_jsonl
from tests.conftest import token_events
from tests.kafka.test_consume import v2_schema_text
from tests.services_kafka import KafkaCluster

ORIGIN = "kafka.cli.test/log"


def _sharded_and_sent(
    kafka_server: KafkaCluster, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], events: list[bytes]
) -> tuple[str, str]:
    """``lineage init`` a 2-shard ledger over 4 partitions, then ``lineage emit --kafka`` the events to
    ``topic`` with the CLI's own producer key; (root ledger path, the log's verifier key)."""
    root = str(tmp_path / "root.db")
    made = run(capsys, "init", "--ledger", root, "--origin", ORIGIN, "--shards", "2", "--partitions", "4", "--json")
    assert made.code == 0, made.err
    source = write_jsonl(tmp_path / "events.jsonl", events)
    sent = run(
        capsys,
        "emit",
        str(source),
        "--kafka",
        kafka_server.bootstrap,
        "--topic",
        topic,
        "--producer",
        "lineage-cli",
        "--key",
        str(tmp_path / "root.db.producer.key"),
        "--json",
    )
    assert sent.code == 0, sent.err
    assert json.loads(sent.out)["sent"] == len(events)
    return root, str(made.json()["verifier_key"])


def test_sharded_kafka_pipeline_from_the_command_line(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = token_events(120, tokens=16)
    root, verifier = _sharded_and_sent(kafka_server, kafka_topic, tmp_path, capsys, events)
    for n in range(2):
        assert Path(shard_url(root, n)).exists()

    consumed = 0
    for shard in (0, 1):
        got = run(
            capsys,
            "consume",
            "--ledger",
            root,
            "--shard",
            str(shard),
            "--bootstrap",
            kafka_server.bootstrap,
            "--topic",
            kafka_topic,
            "--idle-timeout",
            "3",
            "--json",
        )
        assert got.code == 0, got.err
        summary = got.json()
        assert summary["quarantined"] == 0
        assert summary["duplicates"] == 0
        assert set(summary["positions"]) <= {str(p) for p in range(4) if p % 2 == shard}
        consumed += summary["events"]
    assert consumed == 120

    collected = run(capsys, "shards", "collect", "--ledger", root, "--json")
    assert collected.code == 0, collected.err
    assert collected.json()["root_size"] > 0

    verified = run(capsys, "verify", "--ledger", root, "--key", verifier, "--json")
    assert verified.code == 0, verified.out
    report = verified.json()
    assert report["ok"]
    assert len(report["shards"]) == 2

    # a token's timeline, asked of the root, comes from the token's shard
    subject, _ = read_subject(events[0])
    token = subject.removeprefix("token:")
    timeline = run(capsys, "query", "timeline", token, "--ledger", root, "--json")
    assert timeline.code == 0, timeline.err
    expected = [read_subject(e)[1] for e in events if read_subject(e)[0] == subject]
    assert [r["event"]["event_id"] for r in timeline.json()["answer"]] == expected
    store = open_store(root, readonly=True)
    layout = layout_of(store)
    store.close()
    assert layout is not None
    home = open_store(shard_url(root, layout.shard_of(subject)), readonly=True)
    assert len(home.subject_entries([subject])) == len(expected)
    home.close()

    # a query with no token cannot be routed: it says which shard to ask
    refused = run(capsys, "query", "resource", "/v1/orders/1", "--ledger", root)
    assert refused.code == 2
    assert "sharded" in refused.err

    # a producer key registered on the root is registered in every shard, whose consumers check batches
    key = run(
        capsys,
        "keys",
        "register",
        "--ledger",
        root,
        "--producer",
        "svc-b",
        "--key-id",
        "svc-b-1",
        "--generate",
        str(tmp_path / "svc-b.key"),
    )
    assert key.code == 0, key.err
    for n in range(2):
        store = open_store(shard_url(root, n), readonly=True)
        assert any(r.subject == "producer:svc-b" for r in store.subjects_with_prefix("producer:"))
        store.close()
    listed = run(capsys, "keys", "list", "--ledger", root, "--json")
    assert {k["key_id"] for k in listed.json()} >= {"svc-b-1"}

    schemas = run(capsys, "schemas", "list", "--ledger", root, "--json")
    assert schemas.code == 0, schemas.err
    assert [s["fingerprint"] for s in schemas.json()] == [V1.fingerprint.hex()]
    # a new schema is registered in every shard, since each shard's consumer reads with its own registry
    v2 = tmp_path / "v2.avsc"
    v2.write_text(v2_schema_text(), "utf-8")
    added = run(capsys, "schemas", "add", str(v2), "--ledger", root, "--json")
    assert added.code == 0, added.err
    for n in range(2):
        store = open_store(shard_url(root, n), readonly=True)
        assert [r.fingerprint.hex() for r in store.schemas()] == [V1.fingerprint.hex(), added.json()["fingerprint"]]
        store.close()


def test_one_consume_command_runs_every_shard_and_collects_the_root(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = token_events(90, tokens=12, label="all-shards")
    root, verifier = _sharded_and_sent(kafka_server, kafka_topic, tmp_path, capsys, events)
    got = run(
        capsys,
        "consume",
        "--ledger",
        root,
        "--bootstrap",
        kafka_server.bootstrap,
        "--topic",
        kafka_topic,
        "--idle-timeout",
        "3",
        "--collect-every",
        "0.5",
        "--json",
    )
    assert got.code == 0, got.err
    summary = got.json()
    assert summary["failed_shards"] == []
    assert summary["events"] == 90
    assert [s["events"] for s in summary["shards"]] == [
        sum(1 for e in events if shard_of(read_subject(e)[0], 4, 2) == n) for n in range(2)
    ]
    assert summary["root_size"] > 0  # the shards' final checkpoints are in the root
    verified = run(capsys, "verify", "--ledger", root, "--key", verifier, "--json")
    assert verified.code == 0, verified.out


def test_a_stop_signal_sets_the_event_and_the_old_handlers_come_back_even_on_error() -> None:
    import os
    import signal

    from lineage_ledger.cli.kafka import _stopped_by_signals

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signalled: list[bool] = []

    def command() -> None:
        with _stopped_by_signals() as stop:
            assert signal.getsignal(signal.SIGTERM) not in before
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to this thread before kill returns
            signalled.append(stop.is_set())
            raise RuntimeError("opening failed")  # as a ledger that cannot be opened does

    with pytest.raises(RuntimeError, match="opening failed"):
        command()
    assert signalled == [True]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before

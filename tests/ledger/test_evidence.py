"""Evidence bundles: exported from a real multi-block ledger, checked by the stand-alone offline verifier.

The ledger holds a seeded workload (token families with refreshes and rotations, revocations, a planted
replay after revocation, a policy and a data pipeline) in blocks of about 40 entries, so there are several
seals and checkpoints. Expected histories come from the workload's own events, not from the ledger. Then
the bundle is attacked: each table row changes one thing, and the verifier must refuse it and say where.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage_ledger import offline
from lineage_ledger.cli.main import main
from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.note import verifier_key
from lineage_ledger.errors import InputError, NotFoundError
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.offline import BUNDLE_KEY_WARNING, TRUSTED_KEY_ENV_VAR, BundleReport, verify_bundle
from lineage_ledger.store import open_store
from lineage_ledger.store.base import Store
from lineage_ledger.workload import PRODUCERS, Workload, batches, generate
from tests.conftest import token_event

LOG_NAME = "evidence.test.lineage-ledger.local/log"
T0 = 1_763_000_000_000_000_000
S = 1_000_000_000
REPLAY_SECRET = b"evidence-test-secret-0123"
TOKENS = 40
SETTINGS = LedgerSettings(block_size=40, block_seconds=1e9)
"""Blocks close on size only, so the layout depends on the inputs alone: several seals, several checkpoints."""
REVOKED_PRODUCER = "orders-svc"
"""Its key is revoked after the workload: what it signed before must still verify."""
ASSET = "asset:warehouse.revenue_daily"
VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def producer_signer(producer: str) -> Ed25519Signer:
    return Ed25519Signer(producer, hashlib.sha256(producer.encode()).digest())


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class World:
    """The ledger, its trusted key, and what the workload says each subject's history is."""

    url: str
    store: Store
    log_key: str
    workload: Workload
    histories: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    """subject -> [(event_type, occurred_at, producer)] in time order, from the workload's events."""

    def export(self, identifier: str, size: int | None = None) -> bytes:
        return export_evidence(self.store, identifier, size=size)

    def subject_with(self, event_type: str, *, least: int = 1) -> str:
        """The token subject with the most entries among those holding ``event_type`` (at least ``least``)."""
        found = [s for s, h in self.histories.items() if s.startswith("token:") and any(e[0] == event_type for e in h)]
        best = max(found, key=lambda s: (len(self.histories[s]), s))
        assert len(self.histories[best]) >= least
        return best


SUBJECT_FIELDS = {"token": ("token:", "token_id"), "policy": ("policy:", "policy_id"), "data": ("asset:", "asset_id")}


def replay_story() -> list[bytes]:
    """A token used after its revocation (a leaked token replayed): the ledger flags the last use."""
    token = token_fingerprint(REPLAY_SECRET, "replayed")
    at = T0 + 10**15
    return [
        token_event("ISSUED", token, at, user_id="mallory-victim"),
        token_event("USED", token, at + S, resource="/v1/orders", outcome="ALLOW"),
        token_event("REVOKED", token, at + 2 * S, reason="logout"),
        token_event("USED", token, at + 3 * S, resource="/v1/orders", outcome="ALLOW", ip="203.0.113.66"),
    ]


def histories_of(events: list[tuple[str, bytes]]) -> dict[str, list[tuple[str, str, str]]]:
    out: dict[str, list[tuple[str, str, str]]] = {}
    for producer, body in events:
        event = json.loads(body)
        prefix, name = SUBJECT_FIELDS[event["kind"]]
        out.setdefault(prefix + event[name], []).append((event["event_type"], event["occurred_at"], producer))
    return out


def types_of(world: World, subject: str) -> list[str]:
    return [event_type for event_type, _, _ in world.histories[subject]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = str(tmp_path_factory.mktemp("evidence") / "ledger.db")
    log = Ed25519Signer(LOG_NAME, bytes(range(100, 132)))
    signers = {p: producer_signer(p) for p in PRODUCERS}
    key_ids = {p: f"{p}-1" for p in PRODUCERS}
    workload = generate(TOKENS, start_ns=T0)
    replay = replay_story()
    with Ledger.create(url, log, settings=SETTINGS) as ledger:
        for producer, signer in signers.items():
            ledger.register_key(producer, key_ids[producer], signer.public_key)
        for envelope in batches(workload, signers, key_ids, max_batch=25):
            ledger.append(envelope)
        auth = "auth-server"
        ledger.append(seal_batch(replay, producer=auth, key_id=key_ids[auth], signer=signers[auth]))
        ledger.revoke_key(key_ids[REVOKED_PRODUCER])
        ledger.seal()
    store = open_store(url, readonly=True)
    try:
        events = [(producer, body) for _, producer, body in workload.events] + [("auth-server", e) for e in replay]
        yield World(url, store, verifier_key(log.name, log.public_key), workload, histories_of(events))
    finally:
        store.close()


def check(world: World, bundle: bytes, subject: str) -> BundleReport:
    """Verify with the trusted key; the report must show exactly the workload's history of ``subject``."""
    report = verify_bundle(bundle, log_key=world.log_key)
    assert report.problems == ()
    assert report.ok
    assert report.complete
    assert report.key_source == "given"
    assert report.warnings == ()
    assert report.subject == subject
    history = world.histories.get(subject, [])
    assert [(e.event_type, e.occurred_at, e.producer) for e in report.events] == history
    assert report.count == len(history) == len(report.events)
    assert [e.index for e in report.events] == sorted({e.index for e in report.events})
    assert report.tree_size == json.loads(bundle)["tree_size"]
    assert report.origin == LOG_NAME
    return report


# -- bundles that verify -------------------------------------------------------------------------------------


def test_the_workload_has_what_the_tests_need(world: World) -> None:
    types = {e[0] for h in world.histories.values() for e in h}
    assert {"ROTATED", "REFRESHED", "REVOKED", "EXPIRED", "USED", "AGGREGATED", "TRANSMITTED"} <= types
    assert len(world.store.checkpoints()) >= 5


@pytest.mark.parametrize("kind", ["ROTATED", "REFRESHED"])
def test_token_born_of_a_rotation_or_refresh(world: World, kind: str) -> None:
    child = world.subject_with(kind)
    report = check(world, world.export(child.removeprefix("token:")), child)
    assert report.events[0].event_type == kind
    parent = next(
        json.loads(body)["payload"]["parent_token_id"]
        for _, _, body in world.workload.events
        if json.loads(body).get("event_type") == kind and "token:" + json.loads(body)["token_id"] == child
    )
    check(world, world.export(parent), "token:" + parent)


def test_revoked_token(world: World) -> None:
    subject = world.subject_with("REVOKED")
    report = check(world, world.export(subject), subject)
    assert report.revoked
    assert any(e.event_type == "REVOKED" and e.verdict == "ok" for e in report.events)


def test_revocation_then_replay_is_shown_with_its_verdict(world: World) -> None:
    """The planted leaked-token replay: complete history, revoked, and the replay flagged by its verdict."""
    replayed = [s for s in world.histories if s.startswith("token:") and types_of(world, s)[-2:] == ["REVOKED", "USED"]]
    assert replayed, "the workload plants a replay after revocation"
    report = check(world, world.export(replayed[0]), replayed[0])
    assert report.revoked
    assert report.events[-1].event_type == "USED"
    assert report.events[-1].verdict != "ok"


def test_token_that_is_not_revoked(world: World) -> None:
    subject = next(s for s in sorted(world.histories) if s.startswith("token:") and "REVOKED" not in types_of(world, s))
    assert not check(world, world.export(subject), subject).revoked


def test_never_seen_token_is_proven_absent(world: World) -> None:
    never = token_fingerprint(b"another-fingerprint-secret", "never-issued")
    bundle = world.export(never)
    terminal = json.loads(bundle)["map_proof"]["terminal"]
    assert terminal is None or terminal["key"] != hashlib.sha256(f"token:{never}".encode()).hexdigest()
    report = check(world, bundle, "token:" + never)
    assert report.count == 0
    assert report.events == ()
    assert not report.revoked


def test_asset_history(world: World) -> None:
    report = check(world, world.export(ASSET), ASSET)
    assert [e.event_type for e in report.events] == ["AGGREGATED", "TRANSMITTED"]
    assert {e.producer for e in report.events} == {"etl-pipeline"}


def test_policy_history_with_free_form_documents(world: World) -> None:
    report = check(world, world.export("policy:api-access"), "policy:api-access")
    assert [e.event_type for e in report.events] == ["POLICY_CHANGED", "POLICY_CHANGED"]


def test_events_signed_before_their_key_was_revoked_still_verify(world: World) -> None:
    subject = next(s for s, h in sorted(world.histories.items()) if any(e[2] == REVOKED_PRODUCER for e in h))
    bundle = world.export(subject)
    assert json.loads(bundle)["producer_keys"][f"{REVOKED_PRODUCER}-1"]["revoked_at"] is not None
    check(world, bundle, subject)


def test_every_token_of_the_workload_verifies(world: World) -> None:
    for token in world.workload.token_ids:
        check(world, world.export(token), "token:" + token)


def test_bundle_key_is_used_when_none_is_given_and_the_report_says_so(world: World) -> None:
    subject = world.subject_with("REVOKED")
    report = verify_bundle(world.export(subject))
    assert report.ok
    assert report.key_source == "bundle"
    assert report.warnings == (BUNDLE_KEY_WARNING,)


def test_earlier_checkpoint_gives_the_history_as_of_then(world: World) -> None:
    subject = world.subject_with("REVOKED", least=4)
    full = check(world, world.export(subject), subject)
    indices = [e.index for e in full.events]
    sizes = [c.size for c in world.store.checkpoints()]
    earlier = next(s for s in sizes if 0 < sum(i < s for i in indices) < len(indices))
    report = check_prefix(world, world.export(subject, size=earlier), subject, sum(i < earlier for i in indices))
    assert report.tree_size == earlier
    assert report.events == full.events[: report.count]
    assert not report.revoked  # the revocation came later
    replayed = "token:" + token_fingerprint(REPLAY_SECRET, "replayed")
    first = verify_bundle(world.export(replayed), log_key=world.log_key).events[0].index
    before = max(s for s in sizes if s <= first)
    absent = verify_bundle(world.export(replayed, size=before), log_key=world.log_key)
    assert absent.ok
    assert absent.count == 0
    assert absent.events == ()


def check_prefix(world: World, bundle: bytes, subject: str, count: int) -> BundleReport:
    report = verify_bundle(bundle, log_key=world.log_key)
    assert report.problems == ()
    assert report.ok
    assert report.complete
    assert report.count == count
    assert [(e.event_type, e.occurred_at, e.producer) for e in report.events] == world.histories[subject][:count]
    return report


def test_export_refuses_unknown_sizes_and_bad_ids(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.export(world.workload.token_ids[0], size=world.store.latest_checkpoint().size - 1)  # type: ignore[union-attr]
    with pytest.raises(InputError):
        world.export("not-a-token-id")


# -- tampering -----------------------------------------------------------------------------------------------


def _each_key(bundle: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> None:
    for key in bundle["producer_keys"].values():
        change(key)


def flip_hex(text: str, at: int = 0) -> str:
    return text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1 :]


def flip_digit(text: str, at: int) -> str:
    assert text[at].isdigit()
    return text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1 :]


def flip_b64(text: str, at: int = 10) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def batched(bundle: dict[str, Any]) -> int:
    """Position of the first entry whose batch path is not empty (a batch of more than one event)."""
    return next(i for i, e in enumerate(bundle["entries"]) if e["batch"]["path"])


def change_event_byte(b: dict[str, Any], w: World) -> None:
    text = b["entries"][1]["entry"]
    b["entries"][1]["entry"] = flip_digit(text, text.index('"occurred_at":"') + 20)


def swap_in_foreign_entry(b: dict[str, Any], w: World) -> None:
    other = next(s for s in w.histories if s.startswith("token:") and s != b["subject"] and len(w.histories[s]) > 2)
    b["entries"][1] = json.loads(w.export(other))["entries"][1]


def claim_absent(b: dict[str, Any], w: World) -> None:
    b["map_proof"]["terminal"] = None
    b["entries"] = []


def alter_subjects_root(b: dict[str, Any], w: World) -> None:
    text = b["seal"]["entry"]
    b["seal"]["entry"] = flip_hex(text, text.index('"subjects_root":"') + 17)


def alter_checkpoint_root(b: dict[str, Any], w: World) -> None:
    origin, size, root, rest = b["checkpoint"].split("\n", 3)
    b["checkpoint"] = "\n".join((origin, size, flip_b64(root, 5), rest))


def alter_checkpoint_size(b: dict[str, Any], w: World) -> None:
    origin, size, rest = b["checkpoint"].split("\n", 2)
    b["checkpoint"] = "\n".join((origin, str(int(size) - 1), rest))


def alter_checkpoint_signature(b: dict[str, Any], w: World) -> None:
    text, signature = b["checkpoint"].rsplit(" ", 1)
    b["checkpoint"] = text + " " + flip_b64(signature, 20)


def alter_batch_path(b: dict[str, Any], w: World) -> None:
    b["entries"][batched(b)]["batch"]["path"][0] = flip_hex(b["entries"][batched(b)]["batch"]["path"][0])


def alter_batch_signature(b: dict[str, Any], w: World) -> None:
    batch = b["entries"][0]["batch"]
    batch["signature"] = flip_b64(batch["signature"])


def alter_batch_statement(b: dict[str, Any], w: World) -> None:
    batch = b["entries"][0]["batch"]
    statement = json.loads(base64.b64decode(batch["payload"]))
    statement["count"] += 1
    batch["payload"] = base64.b64encode(canonical(statement)).decode()


def replace_producer_key(b: dict[str, Any], w: World) -> None:
    key_id = json.loads(b["entries"][0]["entry"])["key_id"]
    b["producer_keys"][key_id]["public_key"] = producer_signer("impostor").public_key.hex()


def key_valid_only_later(b: dict[str, Any], w: World) -> None:
    key_id = json.loads(b["entries"][0]["entry"])["key_id"]
    b["producer_keys"][key_id]["valid_from"] = "9" * 19 + ".00000"


def key_revoked_before_use(b: dict[str, Any], w: World) -> None:
    key_id = json.loads(b["entries"][0]["entry"])["key_id"]
    b["producer_keys"][key_id]["revoked_at"] = b["producer_keys"][key_id]["valid_from"]


def key_expired_before_use(b: dict[str, Any], w: World) -> None:
    key_id = json.loads(b["entries"][0]["entry"])["key_id"]
    b["producer_keys"][key_id]["valid_until"] = b["producer_keys"][key_id]["valid_from"]


def key_of_another_producer(b: dict[str, Any], w: World) -> None:
    key_id = json.loads(b["entries"][0]["entry"])["key_id"]
    b["producer_keys"][key_id]["producer"] = "billing-svc"


def wrong_log_key(w: World) -> str:
    other = Ed25519Signer(LOG_NAME, bytes(range(1, 33)))
    return verifier_key(other.name, other.public_key)


def reverse_entries(b: dict[str, Any], w: World) -> None:
    b["entries"].reverse()


@dataclass(frozen=True)
class Tamper:
    name: str
    change: Callable[[dict[str, Any], World], None]
    expect: tuple[str, ...]
    """Substrings some problem must contain, each (where and what)."""
    key: Callable[[World], str] | None = None


def nothing(b: dict[str, Any], w: World) -> None:
    return None


def setter(path: str, value: Callable[[Any], Any]) -> Callable[[dict[str, Any], World], None]:
    """Replace the value at a dotted path (list positions as numbers) by ``value(old)``."""

    def change(b: dict[str, Any], w: World) -> None:
        *parents, last = path.split(".")
        node: Any = b
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        node[key] = value(node[key])

    return change


def swap(i: int, j: int) -> Callable[[dict[str, Any], World], None]:
    def change(b: dict[str, Any], w: World) -> None:
        entries = b["entries"]
        entries[i], entries[j] = entries[j], entries[i]

    return change


def drop(i: int) -> Callable[[dict[str, Any], World], None]:
    def change(b: dict[str, Any], w: World) -> None:
        del b["entries"][i]

    return change


TAMPERS = [
    Tamper("one byte of an entry", change_event_byte, ("entries[1]", "inclusion proof")),
    Tamper("drop a middle entry", drop(1), ("entries[1]", "chain is broken")),
    Tamper("drop the first entry", drop(0), ("entries[0]", "64 zeros")),
    Tamper("drop the last entry", drop(-1), ("completeness", "entries, the bundle holds")),
    Tamper("reorder entries", swap(1, 2), ("entries[1]", "chain is broken")),
    Tamper("reverse entries", reverse_entries, ("out of order",)),
    Tamper("entry of another token", swap_in_foreign_entry, ("entries[1]", "not the bundle's subject")),
    Tamper("entry index", setter("entries.1.index", lambda i: i + 1), ("entries[1]", "index")),
    Tamper("inclusion path element", setter("entries.0.inclusion.0", flip_hex), ("entries[0]", "inclusion proof")),
    Tamper("inclusion path truncated", setter("entries.0.inclusion", lambda p: p[:-1]), ("entries[0]", "shorter")),
    Tamper("map sibling", setter("map_proof.siblings.0", flip_hex), ("map proof", "subjects_root")),
    Tamper("map siblings dropped", setter("map_proof.siblings", lambda s: s[1:]), ("map proof",)),
    Tamper("map terminal count", setter("map_proof.terminal.count", lambda c: c + 1), ("map proof", "subjects_root")),
    Tamper("map terminal head", setter("map_proof.terminal.head", flip_hex), ("map proof", "subjects_root")),
    Tamper("map terminal index", setter("map_proof.terminal.index", lambda i: i + 1), ("map proof",)),
    Tamper("map key", setter("map_proof.key", flip_hex), ("map proof", "SHA-256 of the bundle's subject")),
    Tamper("claim non-membership", claim_absent, ("map proof", "subjects_root")),
    Tamper("seal subjects_root", alter_subjects_root, ("seal", "inclusion proof")),
    Tamper("seal index", setter("seal.index", lambda i: i - 1), ("seal", "last entry of the checkpoint")),
    Tamper("seal inclusion", setter("seal.inclusion.0", flip_hex), ("seal", "inclusion proof")),
    Tamper("checkpoint root", alter_checkpoint_root, ("checkpoint", "does not verify")),
    Tamper("checkpoint size", alter_checkpoint_size, ("checkpoint", "tree_size")),
    Tamper("checkpoint signature", alter_checkpoint_signature, ("checkpoint", "does not verify")),
    Tamper("tree size", setter("tree_size", lambda s: s + 1), ("checkpoint", "tree_size")),
    Tamper("wrong log key", nothing, ("checkpoint", "no signature by the log key"), key=wrong_log_key),
    Tamper("malformed log key", nothing, ("log key",), key=lambda w: "not-a-key"),
    Tamper("batch path", alter_batch_path, ("batch", "signed batch root")),
    Tamper("batch signature", alter_batch_signature, ("entries[0]", "batch signature does not verify")),
    Tamper("batch statement", alter_batch_statement, ("entries[0] (index", "not the envelope the entry names")),
    Tamper("batch position", setter("entries.0.batch.position", lambda p: p + 1), ("entries[0]", "position")),
    Tamper("producer key", replace_producer_key, ("batch signature does not verify under producer key",)),
    Tamper("producer of the key", key_of_another_producer, ("entries[0]", "belongs to 'billing-svc'")),
    Tamper("recorded_at before the key", key_valid_only_later, ("entries[0]", "validity window")),
    Tamper("recorded_at after revocation", key_revoked_before_use, ("entries[0]", "revoked_at", "validity window")),
    Tamper("recorded_at after expiry", key_expired_before_use, ("entries[0]", "valid_until", "validity window")),
    Tamper(
        "missing producer key",
        setter("producer_keys", lambda k: {}),
        ("entries[0]", "holds no producer key 'auth-server-1'"),
    ),
    Tamper(
        "producer key without its key entries",
        lambda b, w: _each_key(b, lambda k: k.pop("entries")),
        ("producer key", "expected ['entries'"),
    ),
    Tamper(
        "producer key claim unlike its registration",
        lambda b, w: _each_key(b, lambda k: k.update(valid_from="0000000000000000001.00000")),
        ("producer key", "is not what its registration"),
    ),
    Tamper(
        "revocation hidden",
        lambda b, w: _each_key(b, lambda k: k["entries"].pop() if len(k["entries"]) > 1 else None),
        ("producer key", "revoked_at"),
    ),
    Tamper("subject", setter("subject", lambda s: s[:-1] + ("0" if s[-1] != "0" else "1")), ("subject",)),
    Tamper("format", setter("format", lambda f: "lineage-ledger-evidence/2"), ("bundle", "format")),
    Tamper("missing map proof", lambda b, w: b.pop("map_proof"), ("map proof", "missing")),
]


@pytest.fixture(scope="module")
def target(world: World) -> str:
    """The subject attacked: a revoked token with a long history."""
    return world.subject_with("REVOKED", least=5)


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_tampering_is_caught_and_named(world: World, target: str, tamper: Tamper) -> None:
    bundle = json.loads(world.export(target))
    tamper.change(bundle, world)
    key = world.log_key if tamper.key is None else tamper.key(world)
    report = verify_bundle(canonical(bundle), log_key=key)
    assert not report.ok
    assert not report.complete
    assert not report.revoked
    assert report.problems
    assert any(all(part in problem for part in tamper.expect) for problem in report.problems), report.problems


def test_dropping_the_last_entry_fails_only_completeness(world: World, target: str) -> None:
    bundle = json.loads(world.export(target))
    bundle["entries"].pop()
    report = verify_bundle(canonical(bundle), log_key=world.log_key)
    assert not report.ok
    assert not report.revoked
    assert report.problems
    assert all(p.startswith("completeness: ") for p in report.problems), report.problems
    assert any("the map says the subject has" in p for p in report.problems)


def test_a_present_token_cannot_pass_for_absent_with_another_subjects_proof(world: World, target: str) -> None:
    """The honest non-membership proof of a never-seen token does not lead anywhere for ``target``."""
    never = json.loads(world.export(token_fingerprint(b"another-fingerprint-secret", "x")))
    bundle = json.loads(world.export(target))
    bundle["map_proof"], bundle["entries"] = never["map_proof"], []
    report = verify_bundle(canonical(bundle), log_key=world.log_key)
    assert not report.ok
    assert any(p.startswith("map proof: its key is not SHA-256") for p in report.problems)


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"{}", b'{"format":1.5}', b"\xff\xfe", b'{"a":1,"a":2}'])
def test_garbage_is_refused_without_raising(data: bytes) -> None:
    report = verify_bundle(data, log_key=None)
    assert not report.ok
    assert report.problems


def authenticated_spans(bundle: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the bundle that the checkpoint and signatures cover: all but log_key (the verifier is
    given the key it trusts; the bundle's copy is only a convenience)."""
    log_key, map_proof = bundle.index(b'"log_key":'), bundle.index(b'"map_proof":')
    assert 0 < log_key < map_proof
    # producer keys are proven by their own key entries, so everything after the log key is covered
    return [(0, log_key), (map_proof, len(bundle))]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_byte_changed_in_the_covered_parts_is_caught(world: World, target: str, data: st.DataObject) -> None:
    bundle = world.export(target)
    spans = authenticated_spans(bundle)
    start, end = data.draw(st.sampled_from(spans))
    at = data.draw(st.integers(start, end - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != bundle[at]))
    report = verify_bundle(bundle[:at] + bytes([byte]) + bundle[at + 1 :], log_key=world.log_key)
    assert not report.ok
    assert report.problems


# -- the offline module's own primitives against independent vectors -----------------------------------------


def inclusion_vectors() -> list[Path]:
    files = sorted((VECTORS / "rfc6962-transparency-dev-merkle" / "testdata" / "inclusion").rglob("*.json"))
    return files or [VECTORS / "MISSING.json"]


@pytest.mark.parametrize("path", inclusion_vectors(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_offline_inclusion_against_transparency_dev_vectors(path: Path) -> None:
    vector = json.loads(path.read_text(encoding="utf-8"))

    def b64(text: str | None) -> bytes:
        return base64.b64decode(text or "")

    leaf, root = b64(vector["leafHash"]), b64(vector["root"])
    proof = [b64(p) for p in vector["proof"] or []]
    try:
        offline._check_inclusion(vector["leafIdx"], vector["treeSize"], leaf, proof, root)
    except offline._Malformed:
        assert vector["wantErr"]
    else:
        assert not vector["wantErr"]


def test_offline_note_against_go_example() -> None:
    vector = json.loads((VECTORS / "c2sp-signed-note.json").read_text(encoding="utf-8"))
    key = offline._parse_note_key(vector["verifier_key"])
    assert offline._note_text(vector["signed_note"], key) == (vector["text"], None)
    changed = vector["signed_note"].replace("answer", "Answer")
    assert offline._note_text(changed, key)[1] is not None


# -- command line --------------------------------------------------------------------------------------------


def run(argv: list[str]) -> int:
    return main(argv)


def test_cli_export_then_verify(
    world: World, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "bundle.json"
    token = target.removeprefix("token:")
    assert run(["evidence", "export", token, "-o", str(out), "--ledger", world.url, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["subject"] == target
    assert summary["entries"] == len(world.histories[target])
    assert out.read_bytes() == world.export(token)

    assert run(["evidence", "verify", str(out), "--key", world.log_key, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"]
    assert report["revoked"]
    assert report["key_source"] == "given"
    assert [e["event_type"] for e in report["events"]] == types_of(world, target)

    key_file = tmp_path / "log.pub"
    key_file.write_text(world.log_key + "\n")
    assert run(["evidence", "verify", str(out), "--key", str(key_file)]) == 0
    shown = capsys.readouterr()
    assert "OK" in shown.out
    assert "REVOKED" in shown.out
    assert shown.err == ""

    # the key inside the bundle cannot vouch for it: without a trusted key there is no success to report
    monkeypatch.delenv(TRUSTED_KEY_ENV_VAR, raising=False)
    assert run(["evidence", "verify", str(out)]) == 2
    shown = capsys.readouterr()
    assert "--key" in shown.err
    assert TRUSTED_KEY_ENV_VAR in shown.err
    assert "OK" not in shown.out
    assert BUNDLE_KEY_WARNING not in shown.err
    monkeypatch.setenv(TRUSTED_KEY_ENV_VAR, str(key_file))
    assert run(["evidence", "verify", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key_source"] == "given"


def test_cli_verify_fails_on_a_tampered_bundle(
    world: World, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = json.loads(world.export(target))
    del bundle["entries"][-1]
    out = tmp_path / "bundle.json"
    out.write_bytes(canonical(bundle))
    assert run(["evidence", "verify", str(out), "--key", world.log_key]) == 1
    shown = capsys.readouterr().out
    assert "FAILED" in shown
    assert "completeness" in shown


def test_cli_export_at_a_size_and_of_an_asset(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = world.store.checkpoints()[-2].size
    out = tmp_path / "asset.json"
    assert run(["evidence", "export", ASSET, "-o", str(out), "--size", str(size), "--ledger", world.url]) == 0
    assert "asset:warehouse.revenue_daily" in capsys.readouterr().out
    report = verify_bundle(out.read_bytes(), log_key=world.log_key)
    assert report.ok
    assert report.tree_size == size


def test_offline_main_stand_alone(
    world: World, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TRUSTED_KEY_ENV_VAR, raising=False)
    out = tmp_path / "bundle.json"
    out.write_bytes(world.export(target))
    assert offline.main([str(out), "--key", world.log_key]) == 0
    assert capsys.readouterr().out.startswith(f"OK: complete history of {target}")
    assert offline.main([str(out), "--key", wrong_log_key(world), "--json"]) == 1
    assert not json.loads(capsys.readouterr().out)["ok"]
    assert offline.main([str(tmp_path / "missing.json"), "--key", world.log_key]) == 2
    assert "missing.json" in capsys.readouterr().err
    # without a trusted key nothing is reported as verified; the environment variable is one way to give it
    assert offline.main([str(out)]) == 2
    shown = capsys.readouterr()
    assert (shown.out, "--key" in shown.err, TRUSTED_KEY_ENV_VAR in shown.err) == ("", True, True)
    monkeypatch.setenv(TRUSTED_KEY_ENV_VAR, world.log_key)
    assert offline.main([str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key_source"] == "given"


def test_offline_file_runs_as_a_script(world: World, target: str, tmp_path: Path) -> None:
    """An auditor copies the one file and runs it: no package around it."""
    script = tmp_path / "vendored" / "offline.py"
    script.parent.mkdir()
    script.write_bytes(Path(offline.__file__).read_bytes())
    out = tmp_path / "bundle.json"
    out.write_bytes(world.export(target))
    key_file = tmp_path / "log.pub"
    key_file.write_text(world.log_key)
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(out), "--key", str(key_file), "--json"],
        capture_output=True,
        text=True,
        cwd=script.parent,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == len(world.histories[target])

"""Lineage questions (ledger.lineage) on small ledgers built event by event.

Every expected answer follows from the events the test records: the log indices come from the receipts of
the appends, the times from the ``occurred_at`` the test chose. ``Book`` (also used by the findings, export
and query-CLI tests) appends each event as its own signed batch with the ledger's clock set by the test, so
``recorded_at`` is under the test's control too.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import uuid_utils

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.merkle import leaf_hash, verify_inclusion
from lineage_ledger.core.model import AssetRef, DataEvent, DataPayload, PolicyEvent, PolicyPayload, encode_event
from lineage_ledger.core.note import Checkpoint, open_note
from lineage_ledger.errors import NotFoundError, VerificationError
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from tests.conftest import token_event, token_id

T0 = 1_763_000_000_000_000_000
S = 1_000_000_000
ORIGIN = "lineage-test.example/log"


def at(seconds: float) -> int:
    """The instant ``seconds`` after T0, in ns."""
    return T0 + int(seconds * S)


def hlc(seconds: float) -> str:
    """The HLC reading of ``at(seconds)`` (counter 0), as events carry it."""
    return format_reading(at(seconds), 0)


def content_hash(name: str) -> str:
    """A content hash that stands for the bytes of ``name``."""
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


class ManualClock:
    """The ledger's physical clock, set by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Book:
    """A ledger at ``path`` with registered producers; each event is its own batch, recorded when told."""

    def __init__(self, path: Path, producers: Sequence[str] = ("svc-a", "svc-b")) -> None:
        self.path = path
        self.clock = ManualClock(T0)
        self.log = Ed25519Signer(ORIGIN, hashlib.sha256(b"lineage-test log").digest())
        self.ledger = Ledger.create(
            str(path),
            self.log,
            settings=LedgerSettings(block_size=100_000, block_seconds=1e9),
            clock=self.clock,
        )
        self.signers = {p: Ed25519Signer(p, hashlib.sha256(p.encode()).digest()) for p in producers}
        self.key_indices = [self.ledger.register_key(p, f"{p}-1", s.public_key) for p, s in self.signers.items()]

    @property
    def url(self) -> str:
        """The ledger URL (a plain path)."""
        return str(self.path)

    @property
    def lineage(self) -> Lineage:
        """Lineage queries over the ledger's store."""
        return Lineage(self.ledger.store)

    def append(self, event: bytes, occurred_ns: int, *, producer: str, recorded_ns: int | None) -> int:
        """Append one event; the ledger clock reads ``recorded_ns`` (default: 1 us after it occurred)."""
        self.clock.now = occurred_ns + 1_000 if recorded_ns is None else recorded_ns
        envelope = seal_batch([event], producer=producer, key_id=f"{producer}-1", signer=self.signers[producer])
        return self.ledger.append(envelope).receipts[0].index

    def token(
        self,
        kind: str,
        token: str,
        seconds: float,
        *,
        producer: str = "svc-a",
        recorded: float | None = None,
        **payload: Any,
    ) -> int:
        """Record a token event that occurred ``seconds`` after T0; returns its log index."""
        occurred = at(seconds)
        event = token_event(kind, token, occurred, **payload)
        return self.append(event, occurred, producer=producer, recorded_ns=None if recorded is None else at(recorded))

    def data(
        self,
        kind: str,
        asset: str,
        seconds: float,
        *,
        actor: str = "etl",
        inputs: Sequence[str] = (),
        producer: str = "svc-b",
        **payload: Any,
    ) -> int:
        """Record a data event; each input is read with the content hash of its name."""
        occurred = at(seconds)
        event = encode_event(
            DataEvent(
                event_id=str(uuid_utils.uuid7()),
                event_type=kind,  # type: ignore[arg-type]
                asset_id=asset,
                occurred_at=format_reading(occurred, 0),
                schema_version=1,
                payload=DataPayload(
                    actor=actor,
                    inputs=tuple(AssetRef(asset_id=i, content_hash=content_hash(i)) for i in inputs),
                    **payload,
                ),
            )
        )
        return self.append(event, occurred, producer=producer, recorded_ns=None)

    def policy(self, policy_id: str, version: str, seconds: float, document: dict[str, Any]) -> int:
        """Record a policy change."""
        occurred = at(seconds)
        event = encode_event(
            PolicyEvent(
                event_id=str(uuid_utils.uuid7()),
                event_type="POLICY_CHANGED",
                policy_id=policy_id,
                occurred_at=format_reading(occurred, 0),
                schema_version=1,
                payload=PolicyPayload(policy_version=version, document=document),
            )
        )
        return self.append(event, occurred, producer="svc-b", recorded_ns=None)

    def close(self) -> None:
        """Close the ledger."""
        self.ledger.close()


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    b = Book(tmp_path / "lineage.db")
    yield b
    b.close()


def tokens(*names: str) -> list[str]:
    """Token ids (fingerprints) for distinct labels."""
    return [token_id(f"lineage-{name}") for name in names]


# -- timeline, records ------------------------------------------------------------------------------------


def test_timeline_in_log_order_and_unknown_token(book: Book) -> None:
    t, other = tokens("timeline", "other")
    i1 = book.token("ISSUED", t, 0)
    book.token("ISSUED", other, 1)
    i2 = book.token("USED", t, 2, resource="/a", outcome="ALLOW")
    i3 = book.token("REVOKED", t, 3)
    lin = book.lineage
    recs = lin.timeline(t)
    assert [r.index for r in recs] == [i1, i2, i3]
    assert [r.event.event_type for r in recs] == ["ISSUED", "USED", "REVOKED"]
    assert {r.subject for r in recs} == {"token:" + t}
    assert {r.producer for r in recs} == {"svc-a"}
    assert lin.timeline("token:" + t) == recs
    with pytest.raises(NotFoundError):
        lin.timeline(tokens("never")[0])


def test_records_skip_seals_and_key_changes(book: Book) -> None:
    t = tokens("records")[0]
    indices = [book.token("ISSUED", t, 0), book.token("USED", t, 1)]
    book.ledger.seal()
    lin = book.lineage
    all_rows = list(book.ledger.store.entries(0, book.ledger.size))
    assert len(all_rows) == len(book.key_indices) + 2 + 1  # key changes, events, one seal
    assert [r.index for r in lin.records(all_rows)] == indices


# -- families ---------------------------------------------------------------------------------------------


def test_family_dag_with_refresh_rotation_exchange_and_actor(book: Book) -> None:
    root, c1, c2, x, actor, stranger = tokens("root", "c1", "c2", "x", "actor", "stranger")
    book.token("ISSUED", root, 0, user_id="alice")
    book.token("ISSUED", actor, 1, user_id="svc-robot")
    book.token("ISSUED", stranger, 2)
    i_c1 = book.token("REFRESHED", c1, 10, parent_token_id=root)
    book.token("USED", c1, 11, resource="/v1/a", outcome="ALLOW")
    i_c2 = book.token("ROTATED", c2, 20, parent_token_id=c1)
    i_x = book.token("ISSUED", x, 30, parent_token_id=c2, actor_token_id=actor)
    expected_edges = [
        (root, c1, "REFRESHED", i_c1),
        (c1, c2, "ROTATED", i_c2),
        (c2, x, "EXCHANGED", i_x),
        (actor, x, "ACTOR", i_x),
    ]
    lin = book.lineage
    for start in (root, c1, c2, x, "token:" + c2):
        fam = lin.family(start)
        assert fam.root == root
        assert fam.tokens == [root, c1, c2, x]
        assert fam.edges == expected_edges
        assert fam.evidence == [i_c1, i_c2, i_x]
    assert fam.to_json()["edges"][2] == {"parent": c2, "child": x, "kind": "EXCHANGED", "index": i_x}

    below = lin.descendants(c1)
    assert below.root == c1
    assert below.tokens == [c1, c2, x]
    assert below.edges == expected_edges[1:]

    # the actor is an edge into x, not a parent: its own family is itself
    alone = lin.family(actor)
    assert (alone.root, alone.tokens, alone.edges) == (actor, [actor], [])
    assert lin.family(stranger).tokens == [stranger]


# -- blast radius -----------------------------------------------------------------------------------------


def test_blast_radius_covers_descendants_in_a_half_open_window(book: Book) -> None:
    root, child, other = tokens("br-root", "br-child", "br-other")
    book.token("ISSUED", root, 0)
    book.token("ISSUED", other, 1)
    u_a = book.token("USED", root, 10, resource="/a", outcome="ALLOW")
    book.token("REFRESHED", child, 15, parent_token_id=root)
    u_b = book.token("USED", child, 20, resource="/b", outcome="ALLOW")
    book.token("USED", other, 20, resource="/z", outcome="ALLOW")
    u_c = book.token("USED", root, 30, resource="/c", outcome="ALLOW")
    u_b2 = book.token("USED", child, 31, resource="/b", outcome="ALLOW")
    lin = book.lineage

    br = lin.blast_radius(root, at(10), at(30))
    assert br.tokens == [root, child]
    assert br.evidence == [u_a, u_b]  # start included, end excluded
    assert br.resources == ["/a", "/b"]
    assert (br.start, br.end) == (hlc(10), hlc(30))

    assert lin.blast_radius(root, hlc(10), hlc(30)).evidence == [u_a, u_b]  # HLC text and ns agree
    assert lin.blast_radius(root, at(10) + 1, at(30) + 1).evidence == [u_b, u_c]
    assert lin.blast_radius(root).evidence == [u_a, u_b, u_c, u_b2]
    assert lin.blast_radius(root).resources == ["/a", "/b", "/c"]
    assert lin.blast_radius(root, at(20), at(20)).uses == []
    assert lin.blast_radius(child).evidence == [u_b, u_b2]  # descendants only, never the parent

    as_json = br.to_json()
    assert as_json["window"] == {"start": hlc(10), "end": hlc(30)}
    assert [u["index"] for u in as_json["uses"]] == [u_a, u_b]


def test_since_last_refresh_runs_from_the_latest_refresh_to_the_revocation(book: Book) -> None:
    t, child = tokens("slr", "slr-child")
    book.token("ISSUED", t, 0)
    book.token("USED", t, 5, resource="/before", outcome="ALLOW")
    book.token("REFRESHED", child, 10, parent_token_id=t)
    u1 = book.token("USED", t, 12, resource="/b", outcome="ALLOW")
    u2 = book.token("USED", child, 14, resource="/c", outcome="ALLOW")
    book.token("REVOKED", t, 20)
    u_late = book.token("USED", child, 25, resource="/d", outcome="ALLOW")  # child lives on
    lin = book.lineage

    br = lin.since_last_refresh(t)
    assert (br.start, br.end) == (hlc(10), hlc(20))
    assert br.evidence == [u1, u2]
    assert br.resources == ["/b", "/c"]

    # the child's own window opens at its REFRESHED birth and stays open: it was never revoked
    own = lin.since_last_refresh(child)
    assert (own.start, own.end) == (hlc(10), "~")
    assert own.evidence == [u2, u_late]


# -- resources, users, policies ---------------------------------------------------------------------------


def test_tokens_for_resource_in_a_window(book: Book) -> None:
    a, b, c = tokens("res-a", "res-b", "res-c")
    for i, t in enumerate((a, b, c)):
        book.token("ISSUED", t, i)
    r_a = book.token("USED", a, 10, resource="/r", outcome="ALLOW")
    r_b = book.token("USED", b, 20, resource="/r", outcome="DENY")
    book.token("USED", a, 25, resource="/other", outcome="ALLOW")
    r_c = book.token("USED", c, 30, resource="/r", outcome="ALLOW")
    lin = book.lineage
    assert [r.index for r in lin.tokens_for_resource("/r")] == [r_a, r_b, r_c]
    assert [r.index for r in lin.tokens_for_resource("/r", at(10), at(30))] == [r_a, r_b]
    assert [r.index for r in lin.tokens_for_resource("/r", at(10) + 1)] == [r_b, r_c]
    assert [r.subject for r in lin.tokens_for_resource("/r", None, hlc(20))] == ["token:" + a]
    assert lin.tokens_for_resource("/nothing") == []


def test_policy_changes_for_user_follow_token_lives(book: Book) -> None:
    u1, u2, e1 = tokens("dana-1", "dana-2", "erin-1")
    v1 = book.policy("api", "v1", 0, {"allow": ["read", "write"]})
    book.token("ISSUED", u1, 10, user_id="dana")
    v2 = book.policy("api", "v2", 20, {"allow": ["read"]})
    book.token("REVOKED", u1, 30)
    book.policy("api", "v3", 40, {"allow": []})  # after u1 ended, before u2 began: affects no token of dana
    book.token("ISSUED", u2, 50, user_id="dana")
    book.token("ISSUED", e1, 55, user_id="erin")
    x1 = book.policy("export", "v1", 60, {"destinations": ["crm"]})
    lin = book.lineage

    changes = lin.policy_changes_for_user("dana")
    assert [(c["policy"]["policy_id"], c["policy"]["version"], c["policy"]["index"]) for c in changes] == [
        ("api", "v2", v2),
        ("export", "v1", x1),
    ]
    assert [c["tokens"] for c in changes] == [[u1], [u2]]
    assert changes[0]["policy"]["document"] == {"allow": ["read"]}
    assert v1 not in [c["policy"]["index"] for c in changes]

    # births in the window pick the tokens; the window's end also bounds the changes
    assert [c["tokens"] for c in lin.policy_changes_for_user("dana", at(45))] == [[u2]]
    assert [c["policy"]["index"] for c in lin.policy_changes_for_user("dana", None, at(58))] == [v2]
    assert [c["tokens"] for c in lin.policy_changes_for_user("erin")] == [[e1]]
    assert lin.policy_changes_for_user("nobody") == []


def test_policy_in_force_and_for_token_are_the_versions_of_the_time(book: Book) -> None:
    t = tokens("policy-token")[0]
    api_v1 = book.policy("api", "v1", 0, {"allow": ["read", "write"]})
    export_v1 = book.policy("export", "v1", 5, {"destinations": ["crm"]})
    issued = book.token("ISSUED", t, 10, user_id="dana")
    api_v2 = book.policy("api", "v2", 20, {"allow": ["read"]})
    used = book.token("USED", t, 25, resource="/v1/orders", outcome="ALLOW")
    api_v3 = book.policy("api", "v3", 40, {"allow": []})  # the current version: never the answer below
    lin = book.lineage

    def versions(found: dict[str, Any]) -> dict[str, tuple[str, int]]:
        return {k: (v.version, v.index) for k, v in found.items()}

    assert lin.policy_in_force(at(0) - 1) == {}
    assert versions(lin.policy_in_force(at(10))) == {"api": ("v1", api_v1), "export": ("v1", export_v1)}
    assert versions(lin.policy_in_force(at(20))) == {"api": ("v2", api_v2), "export": ("v1", export_v1)}
    assert versions(lin.policy_in_force(hlc(39))) == {"api": ("v2", api_v2), "export": ("v1", export_v1)}
    assert versions(lin.policy_in_force(at(40)))["api"] == ("v3", api_v3)

    rec, found = lin.policy_for_token(t)
    assert rec.index == issued
    assert versions(found) == {"api": ("v1", api_v1), "export": ("v1", export_v1)}
    assert found["api"].document == {"allow": ["read", "write"]}
    rec, found = lin.policy_for_token(t, "USED")
    assert rec.index == used
    assert versions(found) == {"api": ("v2", api_v2), "export": ("v1", export_v1)}
    with pytest.raises(NotFoundError):
        lin.policy_for_token(t, "REVOKED")

    assert [(p.version, p.index) for p in lin.policy_history("api")] == [
        ("v1", api_v1),
        ("v2", api_v2),
        ("v3", api_v3),
    ]
    assert len(lin.policy_history()) == 4


def test_policy_for_a_refreshed_token_is_the_one_at_its_refresh(book: Book) -> None:
    parent, child = tokens("pft-parent", "pft-child")
    book.policy("api", "v1", 0, {"v": 1})
    book.token("ISSUED", parent, 1)
    v2 = book.policy("api", "v2", 5, {"v": 2})
    born = book.token("REFRESHED", child, 10, parent_token_id=parent)
    rec, found = book.lineage.policy_for_token(child)
    assert rec.index == born
    assert (found["api"].version, found["api"].index) == ("v2", v2)


# -- state at an instant ----------------------------------------------------------------------------------


def test_state_at_before_and_after_revocation_rotation_expiry_and_activation(book: Book) -> None:
    p, c, e, m = tokens("st-parent", "st-child", "st-expiring", "st-mfa")
    book.token("ISSUED", p, 0)
    book.token("USED", p, 5, resource="/a", outcome="ALLOW")
    book.token("ROTATED", c, 10, parent_token_id=p)
    book.token("REVOKED", c, 20)
    book.token("ISSUED", e, 0)
    book.token("EXPIRED", e, 30)
    book.token("ISSUED", m, 40)
    book.token("ACTIVATED", m, 60, mfa_at=hlc(50))
    lin = book.lineage

    def state(token: str, when: int | str) -> str:
        return lin.state_at(token, when).state

    assert state(p, at(0) - 1) == "NONE"
    assert state(p, at(0)) == "ISSUED"
    assert state(p, at(10) - 1) == "ISSUED"
    assert state(p, at(10)) == "ROTATED"  # the child's ROTATED moves the parent
    assert lin.state_at(p, at(10)).issued_ns == at(0)
    assert state(c, at(10) - 1) == "NONE"
    assert state(c, hlc(10)) == "ACTIVE"
    assert state(c, at(20) - 1) == "ACTIVE"
    assert state(c, at(20)) == "REVOKED"
    assert state(e, at(30) - 1) == "ISSUED"
    assert state(e, at(30)) == "EXPIRED"
    assert state(m, at(59)) == "ISSUED"
    assert state(m, at(60)) == "ACTIVE"


# -- data lineage -----------------------------------------------------------------------------------------


def test_upstream_and_downstream_with_content_hashes(book: Book) -> None:
    raw1, raw2, clean, agg = "s3://lake/raw/1.parquet", "s3://lake/raw/2.parquet", "wh.clean", "wh.daily"
    c1 = book.data("CREATED", raw1, 0, output_hash=content_hash(raw1))
    c2 = book.data("CREATED", raw2, 1, output_hash=content_hash(raw2))
    tr = book.data("TRANSFORMED", clean, 10, inputs=[raw1, raw2], output_hash=content_hash(clean))
    ag = book.data("AGGREGATED", agg, 20, inputs=[clean], output_hash=content_hash(agg))
    tx = book.data("TRANSMITTED", agg, 30, destination="https://crm.example.com/import", actor="reverse-etl")
    book.data("CREATED", "unrelated", 31)
    lin = book.lineage

    up = lin.upstream(agg)
    assert up.direction == "upstream"
    assert [r.index for r in up.steps] == [ag, tx, tr, c1, c2]
    assert up.edges == [
        (clean, agg, content_hash(clean), ag),
        (raw1, clean, content_hash(raw1), tr),
        (raw2, clean, content_hash(raw2), tr),
    ]
    assert up.evidence == sorted([c1, c2, tr, ag, tx])

    down = lin.downstream(raw1)
    assert down.direction == "downstream"
    assert [r.index for r in down.steps] == [tr, ag, tx]  # ... and where it was sent
    assert down.edges == [(raw1, clean, content_hash(raw1), tr), (clean, agg, content_hash(clean), ag)]
    assert down.to_json()["edges"][0] == {
        "input": raw1,
        "output": clean,
        "content_hash": content_hash(raw1),
        "index": tr,
    }

    assert lin.upstream(raw2).edges == []
    assert [r.index for r in lin.upstream(raw2).steps] == [c2]
    assert lin.downstream(agg).steps == []


# -- proofs -----------------------------------------------------------------------------------------------


def _checkpoint(book: Book, note: str) -> Checkpoint:
    text, _ = open_note(note, [book.ledger.log_verifier()])
    return Checkpoint.from_text(text)


def test_proofs_verify_against_the_signed_checkpoint(book: Book) -> None:
    t, u = tokens("proof-t", "proof-u")
    first = [book.token("ISSUED", t, 0), book.token("USED", t, 1, resource="/a", outcome="ALLOW")]
    early = book.ledger.seal()
    assert early is not None
    second = [book.token("ISSUED", u, 2), book.token("REVOKED", t, 3)]
    latest = book.ledger.seal()
    assert latest is not None
    pending = book.token("USED", u, 4, resource="/b", outcome="ALLOW")
    lin = book.lineage

    wanted = [*first, *second, pending]
    proofs = lin.proofs(wanted)
    assert proofs["tree_size"] == latest.size
    assert proofs["checkpoint"] == latest.note
    assert proofs["pending"] == [pending]
    cp = _checkpoint(book, proofs["checkpoint"])
    assert cp.size == latest.size
    assert sorted(int(i) for i in proofs["inclusion"]) == [*first, *second]
    for index in [*first, *second]:
        body = proofs["entries"][str(index)].encode()
        assert body == book.ledger.store.entry(index).body
        path = [bytes.fromhex(h) for h in proofs["inclusion"][str(index)]]
        verify_inclusion(leaf_hash(body), index, cp.size, path, cp.root_hash)
    # a proof that checks nothing would pass a tampered entry too
    forged = proofs["entries"][str(first[1])].replace('"/a"', '"/z"').encode()
    with pytest.raises(VerificationError):
        verify_inclusion(
            leaf_hash(forged),
            first[1],
            cp.size,
            [bytes.fromhex(h) for h in proofs["inclusion"][str(first[1])]],
            cp.root_hash,
        )

    # against the earlier checkpoint: only what it covers is proven
    old = lin.proofs(wanted, size=early.size)
    assert old["tree_size"] == early.size
    assert old["pending"] == [*second, pending]
    old_cp = _checkpoint(book, old["checkpoint"])
    for index in first:
        path = [bytes.fromhex(h) for h in old["inclusion"][str(index)]]
        verify_inclusion(leaf_hash(book.ledger.store.entry(index).body), index, early.size, path, old_cp.root_hash)


def test_proofs_need_a_checkpoint(book: Book) -> None:
    index = book.token("ISSUED", tokens("unsealed")[0], 0)
    with pytest.raises(NotFoundError):
        book.lineage.proofs([index])


def test_verify_checks_the_links_of_data_events(book: Book) -> None:
    """The inputs of data events are links too: one removed from the store is caught by verification."""
    book.data("CREATED", "raw/a", 1)
    book.data("CREATED", "raw/b", 2)
    book.data("AGGREGATED", "mart/ab", 3, inputs=["raw/a", "raw/b"])
    book.ledger.seal()
    verifier = book.ledger.log_verifier()
    book.close()
    assert verify_ledger(book.url, verifier=verifier).ok
    with closing(sqlite3.connect(book.path)) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        # store layout 2 names each (kind, key) once, in link_keys
        removed = "DELETE FROM links WHERE key = (SELECT id FROM link_keys WHERE kind = 'input' AND key = 'raw/b')"
        assert db.execute(removed).rowcount == 1
        db.commit()
    report = verify_ledger(book.url, verifier=verifier)
    assert [p.kind for p in report.problems] == ["links"]

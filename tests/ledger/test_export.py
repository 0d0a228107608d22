"""Exports (ledger.export): PROV-JSON read back with the ``prov`` package, DOT, Mermaid and JSON lines.

The story below is a token family (refresh, exchange with an actor, revocation, a use after it, rotation)
and a small data pipeline, sealed into a signed checkpoint, plus one entry after it (pending). Every
expectation is derived from the events the test recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prov.constants import (
    PROV_ATTR_ACTIVITY,
    PROV_ATTR_AGENT,
    PROV_ATTR_ENTITY,
    PROV_ATTR_GENERATED_ENTITY,
    PROV_ATTR_USED_ENTITY,
)
from prov.model import (
    ProvActivity,
    ProvAgent,
    ProvAssociation,
    ProvBundle,
    ProvDerivation,
    ProvDocument,
    ProvEntity,
    ProvGeneration,
    ProvInvalidation,
    ProvUsage,
)

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.note import Checkpoint, open_note
from lineage_ledger.ledger.export import NAMESPACE, to_dot, to_jsonl, to_mermaid, to_prov_json
from lineage_ledger.ledger.lineage import Family, Lineage, Record
from tests.conftest import token_id
from tests.ledger.test_lineage import ORIGIN, Book, content_hash

RAW, CLEAN = "s3://lake/raw/orders.parquet", "warehouse.orders_clean"
DESTINATION = "https://crm.example.com/import"


@dataclass(frozen=True)
class Story:
    book: Book
    checkpoint: Checkpoint
    tokens: dict[str, str]
    at: dict[str, int]
    """Log index of each event by name."""

    @property
    def lineage(self) -> Lineage:
        return self.book.lineage

    def family_items(self) -> list[Family | Record]:
        """What ``lineage export --token-id R`` exports: the family and every event of its tokens."""
        fam = self.lineage.family(self.tokens["R"])
        rows = self.book.ledger.store.subject_entries(["token:" + t for t in fam.tokens])
        return [fam, *self.lineage.records(rows)]


@pytest.fixture
def story(tmp_path: Path) -> Iterator[Story]:
    book = Book(tmp_path / "export.db")
    t = {name: token_id(f"export-{name}") for name in ("R", "A", "C", "X", "D")}
    at: dict[str, int] = {}
    at["iR"] = book.token("ISSUED", t["R"], 0, user_id="alice", ip="10.0.0.1")
    at["iA"] = book.token("ISSUED", t["A"], 1, user_id="robot")
    at["uR"] = book.token("USED", t["R"], 5, resource="/v1/a", outcome="ALLOW", producer="svc-b")
    at["uR2"] = book.token("USED", t["R"], 6, resource="/v1/a", outcome="ALLOW", producer="svc-b")
    at["bC"] = book.token("REFRESHED", t["C"], 10, parent_token_id=t["R"])
    at["uC"] = book.token("USED", t["C"], 12, resource="/v1/b", outcome="ALLOW", producer="svc-b")
    at["bX"] = book.token("ISSUED", t["X"], 15, parent_token_id=t["C"], actor_token_id=t["A"])
    at["rC"] = book.token("REVOKED", t["C"], 20, reason="logout")
    at["vC"] = book.token("USED", t["C"], 25, resource="/v1/c", outcome="ALLOW", producer="svc-b")
    at["bD"] = book.token("ROTATED", t["D"], 30, parent_token_id=t["R"])
    at["cRaw"] = book.data("CREATED", RAW, 31, output_hash=content_hash(RAW))
    at["tClean"] = book.data("TRANSFORMED", CLEAN, 32, inputs=[RAW], output_hash=content_hash(CLEAN))
    at["xClean"] = book.data("TRANSMITTED", CLEAN, 33, destination=DESTINATION, token_id=t["X"])
    row = book.ledger.seal()
    assert row is not None
    text, _ = open_note(row.note, [book.ledger.log_verifier()])
    at["uX"] = book.token("USED", t["X"], 40, resource="/v1/x", outcome="ALLOW", producer="svc-b")  # pending
    yield Story(book, Checkpoint.from_text(text), t, at)
    book.close()


def read_prov(data: bytes) -> ProvDocument:
    doc = ProvDocument.deserialize(content=data.decode("utf-8"), format="json")
    assert isinstance(doc, ProvDocument)
    return doc


def token_uri(tid: str) -> str:
    return f"{NAMESPACE}token/{tid}"


def entry_uri(index: int) -> str:
    return f"{NAMESPACE}entry/{index}"


def producer_uri(name: str) -> str:
    return f"{NAMESPACE}producer/{name}"


def uri(record: Any) -> str:
    assert record.identifier is not None
    return str(record.identifier.uri)


def ids(bundle: ProvBundle, cls: type[Any]) -> set[str]:
    return {uri(r) for r in bundle.get_records(cls)}


def relations(bundle: ProvBundle, cls: type[Any], *names: Any) -> set[tuple[str, ...]]:
    out = set()
    for record in bundle.get_records(cls):
        formal = dict(record.formal_attributes)
        out.add(tuple(str(formal[n].uri) for n in names))
    return out


def values(record: Any, name: str) -> set[Any]:
    return {v for k, v in record.attributes if str(k.uri) == NAMESPACE + name}


def only_bundle(doc: ProvDocument) -> ProvBundle:
    bundles = list(doc.bundles)
    assert len(bundles) == 1
    return bundles[0]


# -- PROV-JSON --------------------------------------------------------------------------------------------


def test_prov_json_round_trips_through_the_prov_package(story: Story) -> None:
    t, at = story.tokens, story.at
    data = to_prov_json(story.family_items(), story.checkpoint)
    doc = read_prov(data)
    bundle = only_bundle(doc)

    # the checkpoint: a bundle, described at the top level by its origin, size and root
    (described,) = [e for e in doc.get_records(ProvEntity) if e.identifier == bundle.identifier]
    assert values(described, "origin") == {ORIGIN}
    assert values(described, "tree_size") == {story.checkpoint.size}
    assert values(described, "root_hash") == {story.checkpoint.root_hash.hex()}

    # tokens are entities (the actor too: X was derived from it); producers are agents
    assert ids(bundle, ProvEntity) == {token_uri(t[n]) for n in ("R", "A", "C", "X", "D")}
    assert ids(bundle, ProvAgent) == {producer_uri("svc-a"), producer_uri("svc-b")}
    covered = ["iR", "uR", "uR2", "bC", "uC", "bX", "rC", "vC", "bD"]
    assert ids(bundle, ProvActivity) == {entry_uri(at[n]) for n in covered}

    (c,) = [e for e in bundle.get_records(ProvEntity) if uri(e) == token_uri(t["C"])]
    assert values(c, "event_type") == {"REFRESHED", "USED", "REVOKED"}
    assert values(c, "verdict") == {"ok", "token.use_after_revoke"}
    assert values(c, "id") == {t["C"]}

    e, a = entry_uri, token_uri
    assert relations(bundle, ProvUsage, PROV_ATTR_ACTIVITY, PROV_ATTR_ENTITY) == {
        (e(at["uR"]), a(t["R"])),
        (e(at["uR2"]), a(t["R"])),
        (e(at["bC"]), a(t["R"])),
        (e(at["uC"]), a(t["C"])),
        (e(at["bX"]), a(t["C"])),
        (e(at["bX"]), a(t["A"])),
        (e(at["vC"]), a(t["C"])),
        (e(at["bD"]), a(t["R"])),
    }
    assert relations(bundle, ProvGeneration, PROV_ATTR_ENTITY, PROV_ATTR_ACTIVITY) == {
        (a(t["R"]), e(at["iR"])),
        (a(t["C"]), e(at["bC"])),
        (a(t["X"]), e(at["bX"])),
        (a(t["D"]), e(at["bD"])),
    }
    assert relations(bundle, ProvDerivation, PROV_ATTR_GENERATED_ENTITY, PROV_ATTR_USED_ENTITY, PROV_ATTR_ACTIVITY) == {
        (a(t["C"]), a(t["R"]), e(at["bC"])),
        (a(t["X"]), a(t["C"]), e(at["bX"])),
        (a(t["X"]), a(t["A"]), e(at["bX"])),
        (a(t["D"]), a(t["R"]), e(at["bD"])),
    }
    # revocation invalidates C; the accepted rotation invalidates R
    assert relations(bundle, ProvInvalidation, PROV_ATTR_ENTITY, PROV_ATTR_ACTIVITY) == {
        (a(t["C"]), e(at["rC"])),
        (a(t["R"]), e(at["bD"])),
    }
    by_svc_b = {"uR", "uR2", "uC", "vC"}
    assert relations(bundle, ProvAssociation, PROV_ATTR_ACTIVITY, PROV_ATTR_AGENT) == {
        (e(at[n]), producer_uri("svc-b" if n in by_svc_b else "svc-a")) for n in covered
    }

    # the entry after the checkpoint stays outside its bundle
    assert ids(doc, ProvActivity) == {entry_uri(at["uX"])}
    assert relations(doc, ProvUsage, PROV_ATTR_ACTIVITY, PROV_ATTR_ENTITY) == {(e(at["uX"]), a(t["X"]))}


def test_prov_activity_carries_the_event(story: Story) -> None:
    t, at = story.tokens, story.at
    bundle = only_bundle(read_prov(to_prov_json(story.family_items(), story.checkpoint)))
    (use,) = [r for r in bundle.get_records(ProvActivity) if uri(r) == entry_uri(at["vC"])]
    assert values(use, "index") == {at["vC"]}
    assert values(use, "resource") == {"/v1/c"}
    assert values(use, "verdict") == {"token.use_after_revoke"}
    assert values(use, "subject") == {"token:" + t["C"]}
    record = story.lineage.timeline(t["C"])[-1]
    assert values(use, "occurred_at") == {record.event.occurred_at}
    assert values(use, "recorded_at") == {record.recorded_at}


def test_prov_json_is_deterministic(story: Story) -> None:
    items = story.family_items()
    first = to_prov_json(items, story.checkpoint)
    assert to_prov_json(items, story.checkpoint) == first
    assert to_prov_json(list(reversed(items)), story.checkpoint) == first
    assert to_prov_json(story.family_items(), story.checkpoint) == first  # rebuilt from the store
    assert first == canonical_bytes(json.loads(first))
    assert b"bundle" not in to_prov_json(items)


def test_prov_without_checkpoint_and_of_a_bare_family(story: Story) -> None:
    t, at = story.tokens, story.at
    fam = story.lineage.family(t["R"])
    doc = read_prov(to_prov_json(fam))
    assert list(doc.bundles) == []
    assert ids(doc, ProvEntity) == {token_uri(t[n]) for n in ("R", "A", "C", "X", "D")}
    # no records were handed in: each edge still becomes a derivation by the entry that recorded it
    assert relations(doc, ProvDerivation, PROV_ATTR_GENERATED_ENTITY, PROV_ATTR_USED_ENTITY, PROV_ATTR_ACTIVITY) == {
        (token_uri(child), token_uri(parent), entry_uri(index)) for parent, child, _, index in fam.edges
    }
    assert ids(doc, ProvActivity) == {entry_uri(at[n]) for n in ("bC", "bX", "bD")}


def test_prov_of_asset_lineage_with_content_hashes(story: Story) -> None:
    t, at = story.tokens, story.at
    up = story.lineage.upstream(CLEAN)
    doc = read_prov(to_prov_json(up))
    entities = {values(r, "id").pop(): r for r in doc.get_records(ProvEntity)}
    assert set(entities) == {RAW, CLEAN, t["X"]}  # X: the token the transmission was made with
    assert values(entities[CLEAN], "event_type") == {"TRANSFORMED", "TRANSMITTED"}
    assert values(entities[RAW], "content_hash") == {content_hash(RAW)}
    raw_uri, clean_uri = (uri(entities[n]) for n in (RAW, CLEAN))
    (derivation,) = doc.get_records(ProvDerivation)
    formal = dict(derivation.formal_attributes)
    assert (str(formal[PROV_ATTR_GENERATED_ENTITY].uri), str(formal[PROV_ATTR_USED_ENTITY].uri)) == (clean_uri, raw_uri)
    assert values(derivation, "content_hash") == {content_hash(RAW)}
    assert relations(doc, ProvUsage, PROV_ATTR_ACTIVITY, PROV_ATTR_ENTITY) == {
        (entry_uri(at["tClean"]), raw_uri),
        (entry_uri(at["xClean"]), clean_uri),
        (entry_uri(at["xClean"]), token_uri(t["X"])),
    }
    assert relations(doc, ProvGeneration, PROV_ATTR_ENTITY, PROV_ATTR_ACTIVITY) == {
        (raw_uri, entry_uri(at["cRaw"])),
        (clean_uri, entry_uri(at["tClean"])),
    }


# -- pictures ---------------------------------------------------------------------------------------------


def test_dot_draws_the_family_and_its_uses(story: Story) -> None:
    t, at = story.tokens, story.at
    dot = to_dot(story.family_items(), story.checkpoint).decode()
    lines = dot.splitlines()
    assert lines[0] == "digraph lineage {"
    assert lines[-1] == "}"
    assert f"checkpoint {ORIGIN} size {story.checkpoint.size}" in dot

    def node(name: str) -> str:
        return f'"token:{t[name]}"'

    for expected in (
        f'{node("R")} -> {node("C")} [label="REFRESHED @{at["bC"]}"];',
        f'{node("C")} -> {node("X")} [label="EXCHANGED @{at["bX"]}"];',
        f'{node("A")} -> {node("X")} [label="ACTOR @{at["bX"]}"];',
        f'{node("R")} -> {node("D")} [label="ROTATED @{at["bD"]}"];',
        f'{node("C")} -> "resource:/v1/b" [label="USED @{at["uC"]}", style=dashed];',
        f'{node("R")} -> "resource:/v1/a" [label="USED ×2 @{at["uR"]}..{at["uR2"]}", style=dashed];',
        f'{node("X")} -> "resource:/v1/x" [label="USED @{at["uX"]}", style=dashed];',
    ):
        assert f"  {expected}" in lines
    (c_line,) = [line for line in lines if line.startswith(f"  {node('C')} [")]
    assert "color=red" in c_line
    assert "style=bold" in c_line
    assert "! token.use_after_revoke" in c_line
    (r_line,) = [line for line in lines if line.startswith(f"  {node('R')} [")]
    assert "color=red" not in r_line  # rotated away, not revoked
    assert len([line for line in lines if " -> " in line]) == 4 + 4  # derivations, (token, resource) pairs
    assert to_dot(list(reversed(story.family_items())), story.checkpoint).decode() == dot


def test_mermaid_draws_the_same_picture(story: Story) -> None:
    t, at = story.tokens, story.at
    text = to_mermaid(story.family_items()).decode()
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    keys = sorted(
        [f"token:{t[n]}" for n in ("R", "A", "C", "X", "D")]
        + [f"resource:{r}" for r in ("/v1/a", "/v1/b", "/v1/c", "/v1/x")]
    )
    n = {key: f"n{i}" for i, key in enumerate(keys)}

    def tok(name: str) -> str:
        return n[f"token:{t[name]}"]

    assert f'  {tok("R")} -->|"REFRESHED @{at["bC"]}"| {tok("C")}' in lines
    assert f'  {tok("A")} -->|"ACTOR @{at["bX"]}"| {tok("X")}' in lines
    assert f'  {tok("C")} -.->|"USED @{at["vC"]}"| {n["resource:/v1/c"]}' in lines
    assert f"  class {tok('C')} ended" in lines
    assert f"  class {tok('C')} flagged" in lines
    assert sum(1 for line in lines if line.startswith("  n") and "|" not in line) == len(keys)
    assert to_mermaid(list(reversed(story.family_items()))).decode() == text


def test_labels_are_escaped(tmp_path: Path) -> None:
    book = Book(tmp_path / "escape.db")
    try:
        t = token_id("export-escape")
        book.token("ISSUED", t, 0)
        book.token("USED", t, 1, resource='/search?q="x"#<b>\\', outcome="ALLOW")
        items = book.lineage.timeline(t)
        dot = to_dot(items).decode()
        assert '"resource:/search?q=\\"x\\"#<b>\\\\"' in dot
        mermaid = to_mermaid(items).decode()
        assert "resource /search?q=#quot;x#quot;#35;#lt;b#gt;\\" in mermaid
        assert '"x"' not in mermaid
    finally:
        book.close()


# -- JSON lines -------------------------------------------------------------------------------------------


def test_jsonl_is_one_canonical_record_per_line_in_log_order(story: Story) -> None:
    items = story.family_items()
    records = sorted((r for r in items if isinstance(r, Record)), key=lambda r: r.index)
    data = to_jsonl(items)
    lines = data.splitlines()
    assert lines == [canonical_bytes(r.to_json()) for r in records]
    assert [json.loads(line)["index"] for line in lines] == sorted(r.index for r in records)
    assert json.loads(lines[-1]) == records[-1].to_json()
    assert to_jsonl(list(reversed(items))) == data
    assert to_jsonl(story.lineage.family(story.tokens["R"])) == b""  # a bare family holds no records
    br = story.lineage.blast_radius(story.tokens["R"])
    assert to_jsonl(br).splitlines() == [canonical_bytes(r.to_json()) for r in br.uses]

"""Lineage answers in formats other tools read: W3C PROV-JSON, Graphviz DOT, Mermaid and JSON lines.

Every function takes lineage answers (ledger.lineage's Family, BlastRadius, AssetLineage, Record, or any
iterable of them, merged) and returns bytes. The output depends on the input alone: ids are sorted, JSON is
canonical (core.encoding.canonical_bytes), times come from the events' ``occurred_at``, never from the
clock, so the same input always gives byte-identical output whatever order it came in.

PROV mapping (namespace ``lineage`` = ``urn:lineage-ledger:``):

* tokens (``lineage:token/<id>``), assets (``lineage:asset/<id>``) and policy versions -> prov:Entity, with
  the event types and verdicts recorded about them;
* producers (the services that signed the events, ``lineage:producer/<id>``) -> prov:Agent;
* every recorded event (``lineage:entry/<log index>``) -> prov:Activity, associated with its producer:
  USED/ACTIVATED/TRANSMITTED/ACCESSED use their subject, births and CREATED/TRANSFORMED/AGGREGATED generate
  it, REFRESHED/ROTATED/exchange and data inputs give prov:wasDerivedFrom (child from parent, output from
  input, with the content hash read), REVOKED, EXPIRED, DELETED and an accepted ROTATED (of the parent)
  give prov:wasInvalidatedBy;
* a checkpoint -> a bundle ``lineage:checkpoint/<origin>/<size>`` holding the statements about entries it
  covers; statements about entries after it (pending) stay at the document's top level.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import msgspec

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.model import DataEvent, PolicyEvent, TokenEvent
from lineage_ledger.core.note import Checkpoint
from lineage_ledger.ledger.export_graph import to_dot, to_mermaid
from lineage_ledger.ledger.export_items import (
    DATA_USES,
    PAYLOAD_SKIP,
    TOKEN_BIRTHS,
    TOKEN_ENDS,
    TOKEN_USES,
    Exportable,
    birth_kind,
    collect,
)
from lineage_ledger.ledger.lineage import Record

__all__ = [
    "NAMESPACE",
    "PREFIX",
    "Exportable",
    "to_dot",
    "to_jsonl",
    "to_mermaid",
    "to_prov_json",
]

PREFIX: Final = "lineage"
NAMESPACE: Final = "urn:lineage-ledger:"


def _local(value: str) -> str:
    return quote(value, safe=":")


def _token_q(token_id: str) -> str:
    return f"{PREFIX}:token/{_local(token_id)}"


def _asset_q(asset_id: str) -> str:
    return f"{PREFIX}:asset/{_local(asset_id)}"


def _entry_q(index: int) -> str:
    return f"{PREFIX}:entry/{index}"


def _qname(local: str) -> dict[str, str]:
    return {"$": f"{PREFIX}:{local}", "type": "prov:QUALIFIED_NAME"}


def _iso(hlc: str) -> dict[str, str]:
    ns = int(hlc[:19])
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {"$": f"{stamp}.{frac:09d}Z", "type": "xsd:dateTime"}


def _value(values: set[Any]) -> Any:
    ordered = sorted(values, key=str)
    return ordered[0] if len(ordered) == 1 else ordered


@dataclass(slots=True)
class _Thing:
    """An entity or agent: its prov:type (a local name in the lineage namespace) and multi-valued attributes."""

    kind: str
    attrs: dict[str, set[Any]]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prov:type": _qname(self.kind)}
        for key, values in self.attrs.items():
            out[key] = _value(values)
        return out


class _Prov:
    """The statements of one PROV scope (the document or a bundle), deduplicated."""

    def __init__(self) -> None:
        self.entities: dict[str, _Thing] = {}
        self.agents: dict[str, _Thing] = {}
        self.activities: dict[str, dict[str, Any]] = {}
        self.relations: set[tuple[str, bytes]] = set()

    def entity(self, qname: str, kind: str, ident: str, **attrs: Any) -> str:
        known = self.entities.setdefault(qname, _Thing(kind, {f"{PREFIX}:id": {ident}}))
        for key, value in attrs.items():
            if value is not None:
                known.attrs.setdefault(f"{PREFIX}:{key}", set()).add(value)
        return qname

    def token(self, token_id: str, **attrs: Any) -> str:
        return self.entity(_token_q(token_id), "Token", token_id, **attrs)

    def asset(self, asset_id: str, **attrs: Any) -> str:
        return self.entity(_asset_q(asset_id), "Asset", asset_id, **attrs)

    def agent(self, producer: str) -> str:
        qname = f"{PREFIX}:producer/{_local(producer)}"
        self.agents.setdefault(qname, _Thing("Service", {f"{PREFIX}:id": {producer}}))
        return qname

    def relation(self, kind: str, **attrs: Any) -> None:
        """A relation of ``kind``; attribute names are given as ``prov_activity`` for ``prov:activity``."""
        self.relations.add((kind, canonical_bytes({k.replace("_", ":", 1): v for k, v in attrs.items()})))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.entities:
            out["entity"] = {q: thing.to_json() for q, thing in self.entities.items()}
        if self.agents:
            out["agent"] = {q: thing.to_json() for q, thing in self.agents.items()}
        if self.activities:
            out["activity"] = dict(self.activities)
        counters: dict[str, int] = {}
        for kind, attrs in sorted(self.relations):
            counters[kind] = counters.get(kind, 0) + 1
            out.setdefault(kind, {})[f"_:{kind}{counters[kind]}"] = msgspec.json.decode(attrs)
        return out


def _payload_attrs(payload: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in msgspec.to_builtins(payload).items():
        if key in PAYLOAD_SKIP or value is None:
            continue
        out[f"{PREFIX}:{key}"] = sorted(value) if isinstance(value, list) else value
    return out


def _record_statements(prov: _Prov, rec: Record) -> None:
    ev = rec.event
    act = _entry_q(rec.index)
    at = _iso(ev.occurred_at)
    prov.activities[act] = {
        "prov:type": _qname(ev.event_type),
        "prov:startTime": at,
        "prov:endTime": at,
        f"{PREFIX}:index": rec.index,
        f"{PREFIX}:event_id": ev.event_id,
        f"{PREFIX}:occurred_at": ev.occurred_at,
        f"{PREFIX}:recorded_at": rec.recorded_at,
        f"{PREFIX}:subject": rec.subject,
        f"{PREFIX}:verdict": rec.verdict,
        **_payload_attrs(ev.payload),
    }
    prov.relation("wasAssociatedWith", prov_activity=act, prov_agent=prov.agent(rec.producer))
    kind: str = ev.event_type
    if isinstance(ev, TokenEvent):
        me = prov.token(ev.token_id, event_type=kind, verdict=rec.verdict)
        p = ev.payload
        if kind in TOKEN_BIRTHS:
            prov.relation("wasGeneratedBy", prov_entity=me, prov_activity=act, prov_time=at)
            for source, label in ((p.parent_token_id, birth_kind(kind)), (p.actor_token_id, "ACTOR")):
                if source is None:
                    continue
                other = prov.token(source)
                prov.relation("used", prov_activity=act, prov_entity=other, prov_time=at)
                prov.relation(
                    "wasDerivedFrom",
                    prov_generatedEntity=me,
                    prov_usedEntity=other,
                    prov_activity=act,
                    prov_type=_qname(label),
                )
            if kind == "ROTATED" and rec.verdict == "ok" and p.parent_token_id is not None:
                prov.relation(
                    "wasInvalidatedBy", prov_entity=_token_q(p.parent_token_id), prov_activity=act, prov_time=at
                )
        elif kind in TOKEN_USES:
            prov.relation("used", prov_activity=act, prov_entity=me, prov_time=at)
        elif kind in TOKEN_ENDS:
            prov.relation("wasInvalidatedBy", prov_entity=me, prov_activity=act, prov_time=at)
    elif isinstance(ev, DataEvent):
        d = ev.payload
        me = prov.asset(ev.asset_id, event_type=kind, verdict=rec.verdict, content_hash=d.output_hash)
        if d.token_id is not None:
            prov.relation("used", prov_activity=act, prov_entity=prov.token(d.token_id), prov_time=at)
        for ref in d.inputs:
            source = prov.asset(ref.asset_id, content_hash=ref.content_hash)
            extra = {"lineage_content_hash": ref.content_hash} if ref.content_hash else {}
            prov.relation("used", prov_activity=act, prov_entity=source, prov_time=at, **extra)
            prov.relation(
                "wasDerivedFrom",
                prov_generatedEntity=me,
                prov_usedEntity=source,
                prov_activity=act,
                prov_type=_qname(kind),
                **extra,
            )
        if kind in {"CREATED", "TRANSFORMED", "AGGREGATED"}:
            prov.relation("wasGeneratedBy", prov_entity=me, prov_activity=act, prov_time=at)
        elif kind in DATA_USES:
            prov.relation("used", prov_activity=act, prov_entity=me, prov_time=at)
        elif kind == "DELETED":
            prov.relation("wasInvalidatedBy", prov_entity=me, prov_activity=act, prov_time=at)
    else:
        assert isinstance(ev, PolicyEvent)
        version = prov.entity(
            f"{PREFIX}:policy/{_local(ev.policy_id)}/{_local(ev.payload.policy_version)}",
            "Policy",
            ev.policy_id,
            version=ev.payload.policy_version,
            event_type=ev.event_type,
            verdict=rec.verdict,
        )
        prov.relation("wasGeneratedBy", prov_entity=version, prov_activity=act, prov_time=at)


def _edge_statements(prov: _Prov, parent: str, child: str, kind: str, index: int, *, asset: bool) -> None:
    """An edge of a Family or AssetLineage whose event record was not handed in."""
    act = _entry_q(index)
    prov.activities.setdefault(act, {"prov:type": _qname(kind), f"{PREFIX}:index": index})
    if asset:
        src, dst = prov.asset(parent), prov.asset(child)
    else:
        src, dst = prov.token(parent), prov.token(child)
    prov.relation(
        "wasDerivedFrom", prov_generatedEntity=dst, prov_usedEntity=src, prov_activity=act, prov_type=_qname(kind)
    )


def to_prov_json(items: Exportable | Iterable[Exportable], checkpoint: Checkpoint | None = None) -> bytes:
    """W3C PROV-JSON of the answers (see the module docstring for the mapping), canonical JSON bytes.

    With a ``checkpoint`` (open it with core.note.open_note first: the bundle claims it), statements about
    entries below its size go into the bundle named after it; the rest stay at the top level.
    """
    got = collect(items)
    covered, pending = _Prov(), _Prov()

    def scope(index: int | None) -> _Prov:
        return pending if checkpoint is not None and index is not None and index >= checkpoint.size else covered

    for index in sorted(got.records):
        _record_statements(scope(index), got.records[index])
    for parent, child, kind, index in sorted(got.token_edges):
        if index not in got.records:
            _edge_statements(scope(index), parent, child, kind, index, asset=False)
    for source, output, _, index in sorted(got.asset_edges, key=lambda e: (e[0], e[1], e[3])):
        if index not in got.records:
            _edge_statements(scope(index), source, output, "DERIVED", index, asset=True)
    mentioned = set(covered.entities) | set(pending.entities)
    for token in sorted(got.tokens):
        if _token_q(token) not in mentioned:
            covered.token(token)
    for asset in sorted(got.assets):
        if _asset_q(asset) not in mentioned:
            covered.asset(asset)

    document: dict[str, Any] = {"prefix": {PREFIX: NAMESPACE}}
    if checkpoint is None:
        document.update(covered.to_json())
        return canonical_bytes(document)
    document.update(pending.to_json())
    name = f"{PREFIX}:checkpoint/{_local(checkpoint.origin)}/{checkpoint.size}"
    document.setdefault("entity", {})[name] = {
        "prov:type": {"$": "prov:Bundle", "type": "prov:QUALIFIED_NAME"},
        f"{PREFIX}:origin": checkpoint.origin,
        f"{PREFIX}:tree_size": checkpoint.size,
        f"{PREFIX}:root_hash": checkpoint.root_hash.hex(),
    }
    document["bundle"] = {name: {"prefix": {PREFIX: NAMESPACE}, **covered.to_json()}}
    return canonical_bytes(document)


def to_jsonl(items: Exportable | Iterable[Exportable]) -> bytes:
    """One canonical JSON object per recorded event (Record.to_json), in log order, one per line.

    Family answers carry no records of their own, so they add nothing here; pass the records too.
    """
    got = collect(items)
    return b"".join(canonical_bytes(got.records[i].to_json()) + b"\n" for i in sorted(got.records))

"""Lineage answers as pictures: Graphviz DOT and Mermaid (re-exported by ledger.export, whose docstring says
what every format guarantees: output depends on the input alone, ids sorted, byte-identical for the same input)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from lineage_ledger.core.model import DataEvent, PolicyEvent, TokenEvent
from lineage_ledger.core.note import Checkpoint
from lineage_ledger.ledger.export_items import TOKEN_BIRTHS, TOKEN_ENDS, Exportable, birth_kind, collect

__all__ = ["to_dot", "to_mermaid"]


@dataclass(slots=True)
class _Node:
    kind: str
    """token, asset, resource, destination or policy."""
    label: str
    notes: set[str] = field(default_factory=set)
    """Event types and broken rules recorded about the node."""
    ended: bool = False
    flagged: bool = False


@dataclass(slots=True)
class _Picture:
    nodes: dict[str, _Node] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    """(from, to, label) -> the log indices the edge rests on."""
    dashed: set[tuple[str, str, str]] = field(default_factory=set)

    def node(self, kind: str, ident: str) -> str:
        key = f"{kind}:{ident}"
        if key not in self.nodes:
            short = ident if kind != "token" else _short_token(ident)
            self.nodes[key] = _Node(kind, short)
        return key

    def edge(self, src: str, dst: str, label: str, index: int, *, dashed: bool = False) -> None:
        self.edges.setdefault((src, dst, label), []).append(index)
        if dashed:
            self.dashed.add((src, dst, label))


def _short_token(token_id: str) -> str:
    region, _, digest = token_id.rpartition(":")
    return (region + ":" if region else "") + digest[:12] + "…"


def _picture(items: Exportable | Iterable[Exportable]) -> _Picture:
    got = collect(items)
    pic = _Picture()
    for token in got.tokens:
        pic.node("token", token)
    for asset in got.assets:
        pic.node("asset", asset)
    for index in sorted(got.records):
        rec = got.records[index]
        ev = rec.event
        if isinstance(ev, TokenEvent):
            me = pic.node("token", ev.token_id)
            p = ev.payload
            if ev.event_type in TOKEN_BIRTHS:
                for source, label in ((p.parent_token_id, birth_kind(ev.event_type)), (p.actor_token_id, "ACTOR")):
                    if source is not None:
                        pic.edge(pic.node("token", source), me, label, index)
            if ev.event_type == "USED" and p.resource is not None:
                pic.edge(me, pic.node("resource", p.resource), "USED", index, dashed=True)
            if ev.event_type in TOKEN_ENDS and rec.verdict == "ok":
                pic.nodes[me].ended = True
        elif isinstance(ev, DataEvent):
            me = pic.node("asset", ev.asset_id)
            d = ev.payload
            for ref in d.inputs:
                pic.edge(pic.node("asset", ref.asset_id), me, ev.event_type, index)
            if d.destination is not None:
                pic.edge(me, pic.node("destination", d.destination), ev.event_type, index, dashed=True)
            if d.token_id is not None:
                pic.edge(pic.node("token", d.token_id), me, ev.event_type, index, dashed=True)
            if ev.event_type == "DELETED":
                pic.nodes[me].ended = True
        else:
            assert isinstance(ev, PolicyEvent)
            me = pic.node("policy", f"{ev.policy_id} {ev.payload.policy_version}")
        pic.nodes[me].notes.add(ev.event_type)
        if rec.verdict != "ok":
            pic.nodes[me].notes.add("! " + rec.verdict)
            pic.nodes[me].flagged = True
    for parent, child, kind, index in got.token_edges:
        if index not in got.records:
            pic.edge(pic.node("token", parent), pic.node("token", child), kind, index)
    for source, output, _, index in got.asset_edges:
        if index not in got.records:
            pic.edge(pic.node("asset", source), pic.node("asset", output), "DERIVED", index)
    return pic


def _edge_label(label: str, indices: list[int]) -> str:
    ordered = sorted(set(indices))
    if len(ordered) == 1:
        return f"{label} @{ordered[0]}"
    return f"{label} ×{len(ordered)} @{ordered[0]}..{ordered[-1]}"


def _node_text(node: _Node) -> list[str]:
    lines = [f"{node.kind} {node.label}"]
    plain = sorted(n for n in node.notes if not n.startswith("! "))
    flags = sorted(n for n in node.notes if n.startswith("! "))
    if plain:
        lines.append(" ".join(plain))
    lines.extend(flags)
    return lines


def _caption(checkpoint: Checkpoint | None) -> str | None:
    if checkpoint is None:
        return None
    return f"checkpoint {checkpoint.origin} size {checkpoint.size} root {checkpoint.root_hash.hex()}"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_SHAPES: Final = {
    "token": "ellipse",
    "asset": "cylinder",
    "resource": "note",
    "destination": "cds",
    "policy": "hexagon",
}


def to_dot(items: Exportable | Iterable[Exportable], checkpoint: Checkpoint | None = None) -> bytes:
    """A Graphviz digraph: tokens, assets, resources and destinations; derivations solid, uses dashed.

    Ended tokens (revoked, expired) are drawn red, entries with a broken rule bold with the rule's id.
    """
    pic = _picture(items)
    lines = ["digraph lineage {", "  graph [rankdir=LR, fontname=Helvetica];"]
    caption = _caption(checkpoint)
    if caption is not None:
        lines.append(f"  graph [label={_dot_quote(caption)}, labelloc=t];")
    lines.append("  node [fontname=Helvetica, fontsize=10];")
    lines.append("  edge [fontname=Helvetica, fontsize=9];")
    for key in sorted(pic.nodes):
        node = pic.nodes[key]
        attrs = [f"shape={_DOT_SHAPES[node.kind]}", f"label={_dot_quote(chr(10).join(_node_text(node)))}"]
        if node.ended:
            attrs.append("color=red")
        if node.flagged:
            attrs.append("style=bold")
        lines.append(f"  {_dot_quote(key)} [{', '.join(attrs)}];")
    for src, dst, label in sorted(pic.edges):
        attrs = [f"label={_dot_quote(_edge_label(label, pic.edges[(src, dst, label)]))}"]
        if (src, dst, label) in pic.dashed:
            attrs.append("style=dashed")
        lines.append(f"  {_dot_quote(src)} -> {_dot_quote(dst)} [{', '.join(attrs)}];")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _mermaid_text(text: str) -> str:
    return (
        text.replace("#", "#35;").replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


_MERMAID_SHAPES: Final = {
    "token": ("([", "])"),
    "asset": ("[(", ")]"),
    "resource": (">", "]"),
    "destination": ("[/", "/]"),
    "policy": ("{{", "}}"),
}


def to_mermaid(items: Exportable | Iterable[Exportable], checkpoint: Checkpoint | None = None) -> bytes:
    """A Mermaid flowchart of the same picture as to_dot (nodes n0, n1, ... in sorted order)."""
    pic = _picture(items)
    ids = {key: f"n{i}" for i, key in enumerate(sorted(pic.nodes))}
    lines = ["flowchart LR"]
    caption = _caption(checkpoint)
    if caption is not None:
        lines.append(f"  %% {caption}")
    for key in sorted(pic.nodes):
        node = pic.nodes[key]
        opening, closing = _MERMAID_SHAPES[node.kind]
        text = "<br/>".join(_mermaid_text(line) for line in _node_text(node))
        lines.append(f'  {ids[key]}{opening}"{text}"{closing}')
    for src, dst, label in sorted(pic.edges):
        arrow = "-.->" if (src, dst, label) in pic.dashed else "-->"
        text = _mermaid_text(_edge_label(label, pic.edges[(src, dst, label)]))
        lines.append(f'  {ids[src]} {arrow}|"{text}"| {ids[dst]}')
    lines.append("  classDef ended stroke:#c00,stroke-width:2px")
    lines.append("  classDef flagged fill:#fdd")
    ended = [ids[k] for k in sorted(pic.nodes) if pic.nodes[k].ended]
    flagged = [ids[k] for k in sorted(pic.nodes) if pic.nodes[k].flagged]
    if ended:
        lines.append(f"  class {','.join(ended)} ended")
    if flagged:
        lines.append(f"  class {','.join(flagged)} flagged")
    return ("\n".join(lines) + "\n").encode("utf-8")

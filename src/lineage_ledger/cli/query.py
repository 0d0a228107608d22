"""``lineage query ...``: lineage questions from the command line (human tables or --json, optional proofs)."""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable
from typing import Any

from rich.table import Table

from lineage_ledger.cli.options import TOKEN_ID_HELP, token_id_argument
from lineage_ledger.cli.render import counted, output_console, print_table
from lineage_ledger.cli.tiers import tiers_of
from lineage_ledger.core.instant import ACCEPTED_FORMS, Instant, format_rfc3339, parse_instant
from lineage_ledger.core.model import TOKEN_EVENT_TYPES
from lineage_ledger.errors import InputError
from lineage_ledger.ledger.holdings import Holdings, active_at, tokens_of_user
from lineage_ledger.ledger.lineage import Lineage, Record
from lineage_ledger.ledger.rollups import token_rollups
from lineage_ledger.ledger.shards import ShardLayout, layout_of, read_layout, shard_url
from lineage_ledger.store import open_store
from lineage_ledger.store.base import Store

__all__ = ["register"]

_out = output_console()


def instant_arg(option: str) -> Callable[[str], Instant]:
    """An argparse ``type`` reading ``option``'s value with core.instant (a usage error, exit 2, if it is
    not a time)."""

    def parse(text: str) -> Instant:
        try:
            return parse_instant(text, field=option)
        except InputError as e:
            raise argparse.ArgumentTypeError(e.reason) from e

    parse.__name__ = "time"
    return parse


TIME_HELP = "a time: " + ACCEPTED_FORMS


def shown(reading: str) -> str:
    """An HLC reading as people read it: RFC 3339 UTC (the reading itself if it is not one)."""
    head = reading[:19]
    return format_rfc3339(int(head)) if len(head) == 19 and head.isdigit() else reading


def _print_json(value: Any) -> None:
    print(json.dumps(value))


def _records_table(title: str, records: list[Record]) -> None:
    table = Table(title=title, show_edge=False, pad_edge=False)
    for col in ("index", "occurred_at", "subject", "event", "verdict", "producer", "resource/detail"):
        table.add_column(col)
    for r in records:
        ev = r.event
        payload = getattr(ev, "payload", None)
        detail = getattr(payload, "resource", None) or getattr(payload, "destination", None) or ""
        verdict = r.verdict if r.verdict == "ok" else f"[red]{r.verdict}[/]"
        table.add_row(str(r.index), shown(ev.occurred_at), r.subject, ev.event_type, verdict, r.producer, str(detail))
    print_table(_out, table)


def _open_for(args: argparse.Namespace) -> Store:
    """The store to ask: the ledger, or for a sharded ledger's root, the shard holding the queried token."""
    store = open_store(args.ledger, readonly=True)
    try:
        layout = layout_of(store)
    except BaseException:
        store.close()
        raise
    if layout is None:
        return store
    store.close()
    token = getattr(args, "token_id", None)
    if not token:
        raise InputError(
            "query", f"{args.ledger} is a sharded ledger; ask one shard with --ledger {shard_url(args.ledger, 0)} ..."
        )
    return open_store(shard_url(args.ledger, layout.shard_of("token:" + token)), readonly=True)


_ACROSS_SHARDS = frozenset({"family", "blast-radius", "since-refresh"})
"""Queries whose answer spans a token's descendants, which may live in other shards."""


def _run_sharded(args: argparse.Namespace, layout: ShardLayout) -> int:
    """A family question on a sharded ledger's root: asked of every shard, evidence as (shard, index)."""
    from lineage_ledger.ledger.sharded_lineage import ShardedLineage

    if args.proofs:
        raise InputError("--proofs", "a sharded answer cites entries of several logs: prove them per shard")
    stores = [open_store(shard_url(args.ledger, n), readonly=True) for n in range(layout.shards)]
    try:
        lineage = ShardedLineage(layout, stores)
        if args.query == "family":
            fam = lineage.family(args.token_id)
            answer, evidence = fam.to_json(), fam.evidence
            lines = [f"[bold]family of {args.token_id}[/] (root {fam.root}, {counted(len(fam.tokens), 'token')})"]
            lines += [f"  {p} --{k}@{s}:{i}--> {c}" for p, c, k, s, i in fam.edges]
        else:
            if args.query == "blast-radius":
                br = lineage.blast_radius(args.token_id, args.start, args.end)
            else:
                br = lineage.since_last_refresh(args.token_id)
            answer, evidence = br.to_json(), br.evidence
            lines = [
                f"[bold]{args.token_id}[/]: {counted(len(br.tokens), 'token')} over "
                f"{counted(layout.shards, 'shard')}, {counted(len(br.uses), 'use')}",
                "  resources: " + (", ".join(br.resources) or "none"),
            ]
    finally:
        for store in stores:
            store.close()
    if args.json:
        _print_json({"answer": answer, "evidence": [{"shard": s, "index": i} for s, i in evidence]})
    else:
        for line in lines:
            _out.print(line)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.query in _ACROSS_SHARDS:
        layout = read_layout(args.ledger)
        if layout is not None:
            return _run_sharded(args, layout)
    store = _open_for(args)
    try:
        lineage = Lineage(store)
        with tiers_of(store) as tiers:
            answer, evidence, show = _QUERIES[args.query](lineage, args)
        proofs = lineage.proofs(evidence) if args.proofs and evidence else None
    finally:
        store.close()
    if args.json:
        _print_json(
            {"answer": answer, "evidence": evidence, **tiers.to_json(), **({"proofs": proofs} if proofs else {})}
        )
    else:
        show()
        _out.print(tiers.describe())
        if proofs:
            _out.print(
                f"{counted(len(proofs['inclusion']), 'inclusion proof')} against checkpoint {proofs['tree_size']}, "
                f"{len(proofs['pending'])} pending; use --json to export them"
            )
    return 0


Answer = tuple[Any, list[int], Callable[[], None]]


def _timeline(lin: Lineage, a: argparse.Namespace) -> Answer:
    recs = lin.timeline(a.token_id)
    return [r.to_json() for r in recs], [r.index for r in recs], lambda: _records_table("timeline", recs)


def _family(lin: Lineage, a: argparse.Namespace) -> Answer:
    fam = lin.family(a.token_id)

    def show() -> None:
        _out.print(f"[bold]family of {a.token_id}[/] (root {fam.root}, {counted(len(fam.tokens), 'token')})")
        for parent, child, kind, index in fam.edges:
            _out.print(f"  {parent} --{kind}@{index}--> {child}")

    return fam.to_json(), fam.evidence, show


def _blast(lin: Lineage, a: argparse.Namespace) -> Answer:
    br = lin.blast_radius(a.token_id, a.start, a.end)

    def show() -> None:
        _out.print(
            f"[bold]blast radius of {a.token_id}[/]: {counted(len(br.tokens), 'token')}, "
            f"{counted(len(br.resources), 'resource')}"
        )
        _out.print("  resources: " + ", ".join(br.resources))
        _records_table("uses", br.uses)

    return br.to_json(), br.evidence, show


def _since_refresh(lin: Lineage, a: argparse.Namespace) -> Answer:
    br = lin.since_last_refresh(a.token_id)

    def show() -> None:
        start = shown(br.start) if br.start else "issue"
        _out.print(f"[bold]{a.token_id}[/] between {start} and {shown(br.end) if br.end != '~' else 'now'}")
        _out.print("  resources: " + (", ".join(br.resources) or "none"))

    return br.to_json(), br.evidence, show


def _resource(lin: Lineage, a: argparse.Namespace) -> Answer:
    recs = lin.tokens_for_resource(a.resource, a.start, a.end)
    tokens = sorted({r.subject.removeprefix("token:") for r in recs})
    return (
        {"resource": a.resource, "tokens": tokens, "uses": [r.to_json() for r in recs]},
        [r.index for r in recs],
        lambda: _records_table(f"{a.resource}: {counted(len(tokens), 'token')}", recs),
    )


def _user_policies(lin: Lineage, a: argparse.Namespace) -> Answer:
    changes = lin.policy_changes_for_user(a.user_id, a.start, a.end)

    def show() -> None:
        for c in changes:
            p = c["policy"]
            _out.print(
                f"{p['policy_id']} -> {p['version']} at {shown(p['occurred_at'])} (index {p['index']}): "
                f"{counted(len(c['tokens']), 'token')} of {a.user_id}"
            )

    return changes, [c["policy"]["index"] for c in changes], show


def _policy_at(lin: Lineage, a: argparse.Namespace) -> Answer:
    if a.token_id:
        rec, policies = lin.policy_for_token(a.token_id, a.event)
        at = rec.event.occurred_at
        evidence = [rec.index, *(p.index for p in policies.values())]
    else:
        if a.at is None:
            raise InputError("--at", "give --at TIME (the instant) or --token-id ID (when that token was issued)")
        policies = lin.policy_in_force(a.at)
        at = a.at.reading()
        evidence = [p.index for p in policies.values()]
    answer = {"at": at, "policies": {k: v.to_json() for k, v in policies.items()}}

    def show() -> None:
        _out.print(f"policies in force at {shown(at)}:")
        for p in policies.values():
            _out.print(
                f"{p.policy_id} {p.version} (changed {shown(p.occurred_at)}, index {p.index}): {json.dumps(p.document)}"
            )

    return answer, evidence, show


def _state_at(lin: Lineage, a: argparse.Namespace) -> Answer:
    state, revoked_by = lin.status_at(a.token_id, a.at)
    answer = {
        "token_id": a.token_id,
        "at": a.at.reading(),
        "state": state.state,
        "issued_ns": state.issued_ns,
        "expires_ns": state.expires_ns,
        "revoked_by": revoked_by,
    }

    def show() -> None:
        why = f" (ancestor {revoked_by} was revoked)" if revoked_by else ""
        _out.print(f"{a.token_id} at {a.at.rfc3339()}: {state.state}{why}")

    return answer, [r.index for r in lin.timeline(a.token_id)], show


def _holdings_table(title: str, held: Holdings) -> None:
    """One line per token, the id whole so it can be copied."""
    _out.print(f"[bold]{title}[/]")
    for life in held.tokens:
        ended = f"ended {shown(life.ended_at)} ({life.ended_by})" if life.ended_at else "not ended"
        who = ", ".join(f"{k} {v}" for k, v in (("user", life.user_id), ("client", life.client_id)) if v)
        parent = f", from {life.parent}" if life.parent else ""
        _out.print(f"  {life.token_id}  born {shown(life.born_at)}, {ended}{parent}" + (f" ({who})" if who else ""))


def _tokens_of_user(lin: Lineage, a: argparse.Namespace) -> Answer:
    held = tokens_of_user(lin, a.user_id, a.start, a.end)
    title = f"tokens held by {a.user_id}: {len(held.tokens)}"
    return held.to_json(), held.evidence, lambda: _holdings_table(title, held)


def _active_at(lin: Lineage, a: argparse.Namespace) -> Answer:
    held = active_at(lin, a.at, user_id=a.user, client_id=a.client, resource=a.resource)
    title = f"tokens active at {a.at.rfc3339()}: {len(held.tokens)}"
    return held.to_json(), held.evidence, lambda: _holdings_table(title, held)


def _asset(direction: str) -> Callable[[Lineage, argparse.Namespace], Answer]:
    def run(lin: Lineage, a: argparse.Namespace) -> Answer:
        result = lin.upstream(a.asset_id) if direction == "upstream" else lin.downstream(a.asset_id)

        def show() -> None:
            for src, dst, digest, index in result.edges:
                _out.print(f"  {src} ({digest or '-'}) --@{index}--> {dst}")

        return result.to_json(), result.evidence, show

    return run


def _rollup(lin: Lineage, a: argparse.Namespace) -> Answer:
    rows = token_rollups(lin.store, "token:" + a.token_id, a.day)

    def show() -> None:
        table = Table(title=f"daily rollups of {a.token_id}", show_edge=False, pad_edge=False)
        for col in ("day", "events", "uses", "first", "last", "resources", "outcomes", "stored"):
            table.add_column(col)
        for r in rows:
            outcomes = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())
            first, last, stored = shown(r["first_at"]), shown(r["last_at"]), "yes" if r["stored"] else "not yet"
            resources = ", ".join(r["resources"])
            table.add_row(r["day"], str(r["events"]), str(r["uses"]), first, last, resources, outcomes, stored)
        print_table(_out, table)

    return rows, [], show


_QUERIES: dict[str, Callable[[Lineage, argparse.Namespace], Answer]] = {
    "rollup": _rollup,
    "timeline": _timeline,
    "family": _family,
    "blast-radius": _blast,
    "since-refresh": _since_refresh,
    "resource": _resource,
    "user-policies": _user_policies,
    "policy-at": _policy_at,
    "state-at": _state_at,
    "tokens-of-user": _tokens_of_user,
    "active-at": _active_at,
    "upstream": _asset("upstream"),
    "downstream": _asset("downstream"),
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage query <question>`` to the CLI's subcommands."""
    q = sub.add_parser("query", parents=[common], help="lineage questions, with proofs on request")
    qs = q.add_subparsers(dest="query", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = qs.add_parser(name, parents=[common], help=help_text)
        p.add_argument("--proofs", action="store_true", help="include inclusion proofs of the evidence")
        p.set_defaults(func=_run)
        return p

    def token(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("token_id", type=token_id_argument, help=TOKEN_ID_HELP)
        return p

    token(add("timeline", "a token's events"))
    token(add("family", "a token's family DAG (ancestors and descendants)"))
    _window(token(add("blast-radius", "every descendant and every resource touched in a window")))
    token(add("since-refresh", "resources used between the last refresh and the revocation"))
    p = add("resource", "tokens that accessed a resource in a window")
    p.add_argument("resource", help="the resource as producers name it in USED events, e.g. /v1/orders")
    _window(p)
    p = add("user-policies", "policy changes that affected tokens issued to a user in a window")
    p.add_argument("user_id", help="the user id of the tokens' ISSUED events")
    _window(p)
    p = add("policy-at", "the policy in force at an instant, or when a token was issued/used")
    instant = p.add_mutually_exclusive_group(required=True)
    instant.add_argument("--at", type=instant_arg("--at"), help="the instant; " + TIME_HELP)
    instant.add_argument("--token-id", type=token_id_argument, help="the instant of this token's --event")
    p.add_argument(
        "--event",
        default="ISSUED",
        choices=TOKEN_EVENT_TYPES,
        help="with --token-id: the token's first event of this type (default ISSUED)",
    )
    p = token(add("state-at", "a token's lifecycle state at an instant"))
    p.add_argument("--at", type=instant_arg("--at"), required=True, help="the instant; " + TIME_HELP)
    p = add("tokens-of-user", "every token a user held (born to the user or derived from one), in a window")
    p.add_argument("user_id", help="the user id of the tokens' ISSUED events")
    _window(p)
    p = add("active-at", "every token active at an instant, optionally of one user, client or resource")
    p.add_argument("--at", type=instant_arg("--at"), required=True, help="the instant; " + TIME_HELP)
    p.add_argument("--user", help="only tokens held by this user")
    p.add_argument("--client", help="only tokens born for this client (and tokens derived from them)")
    p.add_argument("--resource", help="only tokens that had used this resource by then")
    p = token(add("rollup", "a token's daily rollups: uses, first and last access, resources, outcomes"))
    p.add_argument("--day", type=_day, help="only this day (YYYY-MM-DD, UTC)")
    add("upstream", "what a data asset was derived from").add_argument("asset_id", help="the data asset's id")
    add("downstream", "what was derived from a data asset").add_argument("asset_id", help="the data asset's id")


def _day(text: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from e


def _window(p: argparse.ArgumentParser) -> None:
    """--start and --end of a half-open window, parsed as times."""
    p.add_argument("--start", type=instant_arg("--start"), help="the window's start, included; " + TIME_HELP)
    p.add_argument("--end", type=instant_arg("--end"), help="the window's end, excluded; " + TIME_HELP)

"""``lineage archive`` (sealed blocks older than the hot window into verified Parquet files) and
``lineage retention set|show|apply`` (the retention policy, and expiry of archive files past it)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lineage_ledger.cli._common import open_ledger
from lineage_ledger.cli.query import TIME_HELP, instant_arg
from lineage_ledger.cli.render import counted, output_console
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.errors import InputError

__all__ = ["register"]

_out = output_console()


def _default_location(args: argparse.Namespace, recorded: list[Any]) -> str:
    if args.to:
        return str(args.to)
    if recorded:
        return str(recorded[-1].location)
    if "://" in args.ledger and not args.ledger.startswith("sqlite:///"):
        raise InputError("--to", "a PostgreSQL ledger has no directory beside it: name the archive with --to")
    return str(Path(args.ledger.removeprefix("sqlite:///").split("?", 1)[0] + ".archive"))


def _archive(args: argparse.Namespace) -> int:
    from lineage_ledger.archive.location import ArchiveLocation
    from lineage_ledger.archive.retention import DAY_NS, current_policy
    from lineage_ledger.archive.writer import archive_ledger

    with open_ledger(args) as ledger:
        store = ledger.store
        location = ArchiveLocation(_default_location(args, store.archives()))
        if args.before is not None:
            cutoff = args.before.reading()
        else:
            days = args.older_than
            if days is None:
                policy = current_policy(store)
                if policy is None:
                    raise InputError(
                        "--older-than", "no retention policy is recorded: give --older-than DAYS or --before TIME"
                    )
                days = policy.hot_days
            cutoff = format_reading(time.time_ns() - days * DAY_NS, 0)
        began = time.perf_counter()
        done = archive_ledger(ledger, location, cutoff, max_entries=args.max_file_entries)
        seconds = time.perf_counter() - began
    entries = sum(f.entries for f in done)
    size = sum(f.bytes for f in done)
    summary = {
        "location": location.describe(),
        "before": cutoff,
        "files": [
            {
                "first": f.first,
                "last": f.last,
                "file": f.file,
                "bytes": f.bytes,
                "entries": f.entries,
                "deleted_hot": f.deleted,
                "record": f.record,
            }
            for f in done
        ],
        "entries": entries,
        "bytes": size,
        "bytes_per_entry": round(size / entries, 1) if entries else None,
        "seconds": round(seconds, 3),
    }
    if args.json:
        print(json.dumps(summary))
    elif not done:
        _out.print(f"nothing to archive: no whole sealed block before {cutoff} that is still hot")
    else:
        for f in done:
            _out.print(f"  {f.file}: entries {f.first}..{f.last}, {f.bytes:,} bytes, record at {f.record}")
        rate = f"{entries / seconds:,.0f} entries/s" if seconds else "-"
        _out.print(
            f"[green]archived[/] {counted(entries, 'entry', 'entries')} in {counted(len(done), 'file')} to "
            f"{location.describe()} ({size / max(entries, 1):.1f} bytes/entry, {rate}); each file read back "
            "and checked against the log before its hot entries were deleted"
        )
    return 0


def _policy_json(policy: Any) -> dict[str, Any]:
    return {
        "name": policy.name,
        "hot_days": policy.hot_days,
        "archive_days": policy.archive_days,
        "keep_days": policy.keep_days,
        "recorded_at_index": policy.index,
    }


def _retention_set(args: argparse.Namespace) -> int:
    from lineage_ledger.archive.retention import set_policy

    with open_ledger(args) as ledger:
        policy = set_policy(ledger, args.name, args.hot_days, args.archive_days, args.keep_days)
        ledger.seal()
    if args.json:
        print(json.dumps(_policy_json(policy)))
    else:
        _out.print(
            f"retention policy {policy.name!r} recorded at index {policy.index}: hot {policy.hot_days} d, "
            f"archive {policy.archive_days} d, kept {policy.keep_days} d"
        )
    return 0


def _retention_show(args: argparse.Namespace) -> int:
    from lineage_ledger.archive.retention import current_policy
    from lineage_ledger.store import open_store

    store = open_store(args.ledger, readonly=True)
    try:
        policy = current_policy(store)
        archives, expiries = store.archives(), store.expiries()
    finally:
        store.close()
    expired = {e.first: e for e in expiries}
    ranges: list[dict[str, Any]] = [
        {
            "first": a.first,
            "last": a.last,
            "file": a.file,
            "location": a.location,
            "record": a.record,
            **(
                {"expired": {"policy": expired[a.first].policy, "record": expired[a.first].record}}
                if a.first in expired
                else {}
            ),
        }
        for a in archives
    ]
    if args.json:
        print(json.dumps({"policy": _policy_json(policy) if policy else None, "archived": ranges}))
        return 0
    _out.print(
        "no retention policy recorded"
        if policy is None
        else f"policy {policy.name!r} (index {policy.index}): hot {policy.hot_days} d, "
        f"archive {policy.archive_days} d, kept {policy.keep_days} d"
    )
    for r in ranges:
        state = f"expired under {r['expired']['policy']!r}" if "expired" in r else "archived"
        _out.print(f"  entries {r['first']}..{r['last']}: {state} ({r['file']})")
    return 0


def _retention_apply(args: argparse.Namespace) -> int:
    from lineage_ledger.archive.retention import apply_retention

    now = args.now.ns if args.now is not None else time.time_ns()
    with open_ledger(args) as ledger:
        policy, expired = apply_retention(ledger, now)
        if expired:
            ledger.seal()
    if args.json:
        print(
            json.dumps(
                {
                    "policy": _policy_json(policy),
                    "expired": [{"first": e.first, "last": e.last, "record": e.record} for e in expired],
                }
            )
        )
    else:
        for e in expired:
            _out.print(f"  entries {e.first}..{e.last}: expired under {e.policy!r} (record at {e.record})")
        _out.print(f"{counted(len(expired), 'archived range')} past retention under policy {policy.name!r}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage archive`` and ``lineage retention set|show|apply``."""
    p = sub.add_parser(
        "archive", parents=[common], help="move sealed blocks older than the hot window into verified Parquet files"
    )
    p.add_argument(
        "--to",
        help="archive location: a directory or s3://bucket/prefix?endpoint=URL (default: the last one used, "
        "else <ledger>.archive beside an embedded ledger)",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--older-than", type=int, metavar="DAYS", help="archive blocks older than DAYS days")
    when.add_argument("--before", type=instant_arg("--before"), help="archive blocks recorded before " + TIME_HELP)
    p.add_argument(
        "--max-file-entries", type=int, default=4_000_000, help="entries per file at most (default 4,000,000)"
    )
    p.set_defaults(func=_archive)

    r = sub.add_parser("retention", parents=[common], help="the retention policy, and expiry past it")
    rs = r.add_subparsers(dest="retention_command", required=True)
    q = rs.add_parser("set", parents=[common], help="record the retention policy in force (a signed entry)")
    q.add_argument("--name", required=True, help="the policy's name, cited by every expiry under it")
    q.add_argument("--hot-days", type=int, required=True, help="days entries stay in the hot store")
    q.add_argument("--archive-days", type=int, default=0, help="days archive files count as warm (reported)")
    q.add_argument("--keep-days", type=int, required=True, help="days entries are kept at all")
    q.set_defaults(func=_retention_set)
    q = rs.add_parser("show", parents=[common], help="the policy in force and every archived range")
    q.set_defaults(func=_retention_show)
    q = rs.add_parser("apply", parents=[common], help="expire archived ranges past retention: record, then delete")
    q.add_argument("--now", type=instant_arg("--now"), help="judge as of this time (default: now); " + TIME_HELP)
    q.set_defaults(func=_retention_apply)

"""``lineage rollup`` writes the daily rollups per token of the days the log has completed."""

from __future__ import annotations

import argparse
from typing import Any

from lineage_ledger.cli.render import counted, output_console, print_json
from lineage_ledger.ledger.rollups import roll_up
from lineage_ledger.store import open_store

__all__ = ["register"]

out = output_console()


def cmd_rollup(args: argparse.Namespace) -> int:
    store = open_store(args.ledger)
    try:
        days = roll_up(store)
    finally:
        store.close()
    if args.json:
        print_json(out, {"days": [{"day": d.day, "first_index": d.first, "end_index": d.end} for d in days]})
    elif days:
        out.print(
            f"rolled up {counted(len(days), 'day')}: {days[0].day} .. {days[-1].day} (entries before {days[-1].end})"
        )
    else:
        out.print("no complete day to roll up")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage rollup`` to the CLI's subcommands."""
    p = sub.add_parser(
        "rollup",
        parents=[common],
        help="store the daily rollups per token of every complete day not yet rolled up",
    )
    p.set_defaults(func=cmd_rollup)

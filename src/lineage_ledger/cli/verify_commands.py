"""``lineage verify`` checks a whole ledger (or every shard of a sharded one); ``lineage checkpoint`` prints its
signed checkpoints; ``lineage prove`` gives inclusion and consistency proofs against them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape

from lineage_ledger.cli._common import CommandError
from lineage_ledger.cli.proofs import checkpoint_list, consistency_answer
from lineage_ledger.cli.render import counted, error_console, output_console, print_json, progress
from lineage_ledger.cli.timestamp import check_timestamps, print_timestamp_results
from lineage_ledger.cli.witness import add_policy_arguments, check_witnessed, policy_from
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.note import NoteVerifier
from lineage_ledger.errors import NotFoundError
from lineage_ledger.keys import load_verifier
from lineage_ledger.ledger.log_keys import read_key_chain
from lineage_ledger.ledger.verification.report import VerifyReport
from lineage_ledger.ledger.verify import verify_ledger, verify_since
from lineage_ledger.store import open_store
from lineage_ledger.store.base import ExpiryRow

__all__ = ["is_sharded", "register", "verify_sharded_ledger"]

out = output_console()
err = error_console()


def archive_report(url: str, verifier: NoteVerifier | None) -> tuple[VerifyReport, list[ExpiryRow]] | None:
    """The report of the archive tier's checks (lineage_ledger.archive.checks), each problem with the index
    range it affects, when they fail or when a range has expired (then the entries cannot all be verified
    again: the report says which checks ran); None when there is no archive or it checks out, so the full
    verification runs next, reading archived entries through their files."""
    store = open_store(url, readonly=True)
    try:
        if not store.archives():
            return None
        from lineage_ledger.archive.checks import archive_problems, expired_tree_problems

        problems = archive_problems(store)
        expiries = store.expiries()
        if not problems and not expiries:
            return None
        if not problems:
            problems = expired_tree_problems(store, verifier)
        report = VerifyReport(url, size=store.size())
    finally:
        store.close()
    report.problems.extend(problems)
    return report, expiries


def _verifier_from(args: argparse.Namespace) -> NoteVerifier | None:
    if args.key:
        return load_verifier(args.key)
    return None


def _read_note(path: str, option: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"{option}: cannot read the checkpoint note {path}: {e}") from e


def cmd_verify(args: argparse.Namespace) -> int:
    trusted = _read_note(args.trusted_checkpoint, "--trusted-checkpoint") if args.trusted_checkpoint else None
    since = _read_note(args.since, "--since") if args.since else None
    if since is not None and trusted is not None:
        raise CommandError("--since already checks that the ledger extends its checkpoint: give one of the two")
    policy = policy_from(args)
    if is_sharded(args.ledger):
        if since is not None:
            raise CommandError("--since applies to one log; verify each shard's ledger with it instead")
        if policy is not None:
            raise CommandError("--witness-key applies to one log; verify each shard's ledger with it instead")
        if args.tsa_cert:
            raise CommandError("--tsa-cert applies to one log; verify each shard's ledger with it instead")
        return verify_sharded_ledger(args)
    archived = archive_report(args.ledger, _verifier_from(args))  # the archive first: entries are read through it
    expired: list[ExpiryRow] = []
    if archived is not None:
        report, expired = archived
    else:
        with progress(err, args.json, "verify", None) as advance:
            if since is not None:
                report = verify_since(
                    args.ledger, since, verifier=_verifier_from(args), workers=args.workers, progress=advance
                )
            else:
                report = verify_ledger(
                    args.ledger,
                    verifier=_verifier_from(args),
                    trusted_checkpoint=trusted,
                    workers=args.workers,
                    progress=advance,
                )
    witnessed = check_witnessed(args.ledger, _verifier_from(args), policy) if policy is not None else None
    stamps = check_timestamps(args.ledger, args.tsa_cert) if args.tsa_cert else None
    ok = report.ok and (witnessed is None or not witnessed[2]) and all(s["ok"] for s in stamps or ())
    if args.json:
        extra = {} if stamps is None else {"ok": ok, "timestamps": stamps}
        if expired:
            extra["expired"] = [
                {"first": e.first, "last": e.last, "policy": e.policy, "record": e.record} for e in expired
            ]
        print_json(out, report.to_json() | ({} if witnessed is None else _witnessed_json(witnessed, ok)) | extra)
    else:
        if args.key is None:
            err.print(
                "[yellow]warning:[/] no --key given: checking signatures against the key copy stored in the "
                "database, which only proves the ledger is internally consistent. Pass the log's verifier key."
            )
        for e in expired:
            out.print(f"entries {e.first}..{e.last} expired under retention policy {e.policy!r} (record at {e.record})")
        if report.ok and expired:
            out.print(
                "[green]OK[/] the archive records and files, and the latest checkpoint's signature and root over "
                "every tier; the entries cannot all be verified again past an expiry"
            )
        elif report.ok and report.since is not None:
            rate = f"{report.checked / report.seconds:,.0f}" if report.seconds else "-"
            out.print(
                f"[green]OK[/] {counted(report.checked, 'entry', 'entries')} since index {report.since} (of "
                f"{report.size}), {counted(report.blocks, 'block')}, {counted(report.envelopes, 'envelope')} "
                f"verified in {report.seconds:.2f} s ({rate} entries/s); extends the trusted checkpoint of size "
                f"{report.trusted_size}"
            )
        elif report.ok:
            rate = f"{report.size / report.seconds:,.0f}" if report.seconds else "-"
            out.print(
                f"[green]OK[/] {counted(report.size, 'entry', 'entries')}, {counted(report.blocks, 'block')}, "
                f"{counted(report.checkpoints, 'checkpoint')}, {counted(report.envelopes, 'envelope')} verified in "
                f"{report.seconds:.2f} s ({rate} entries/s)"
                + (f"; extends the trusted checkpoint of size {report.trusted_size}" if report.trusted_size else "")
            )
        else:
            out.print(f"[red]FAILED[/] first bad index: {report.first_bad_index}")
            for p in report.problems[:20]:
                where = f"index {p.index}" if p.index is not None else "-"
                out.print(f"  [{p.kind}] {where}: {p.message}")
        if witnessed is not None:
            _print_witnessed(witnessed)
        if stamps is not None:
            print_timestamp_results(stamps)
    return 0 if ok else 1


def _witnessed_json(witnessed: tuple[int, int, list[str]], ok: bool) -> dict[str, Any]:
    size, _, problems = witnessed
    return {"ok": ok, "witnessed_size": size, "witness_problems": problems}


def _print_witnessed(witnessed: tuple[int, int, list[str]]) -> None:
    size, latest, problems = witnessed
    if problems:
        out.print(f"[red]FAILED[/] witness policy: {escape(problems[0])}")
    elif size < latest:
        out.print(f"[green]OK[/] witnessed up to checkpoint {size}; checkpoint {latest} awaits the quorum")
    else:
        out.print(f"[green]OK[/] the latest checkpoint ({size}) meets the witness policy")


def is_sharded(url: str) -> bool:
    """Whether ``url`` is the root of a sharded ledger."""
    from lineage_ledger.ledger.shards import read_layout

    return read_layout(url) is not None


def verify_sharded_ledger(args: argparse.Namespace) -> int:
    """Verify the root and every shard of the sharded ledger ``args.ledger``, print the report; the exit code."""
    from lineage_ledger.ledger.shards import verify_sharded

    report = verify_sharded(args.ledger, verifier=_verifier_from(args), workers=args.workers)
    if args.json:
        print_json(out, report.to_json())
        return 0 if report.ok else 1
    for name, part in [("root", report.root), *((f"shard {n}", r) for n, r in enumerate(report.shards))]:
        status = "[green]OK[/]" if part.ok else "[red]FAILED[/]"
        out.print(f"{status} {name}: {part.size} entries, {part.blocks} blocks, {part.checkpoints} checkpoints")
        for problem in part.problems[:10]:
            out.print(f"  [{problem.kind}] index {problem.index}: {problem.message}")
    for problem in report.problems[:20]:
        out.print(f"  [red][{problem.kind}][/] {problem.message}")
    total = report.root.size + sum(r.size for r in report.shards)
    verdict = "[green]OK[/]" if report.ok else "[red]FAILED[/]"
    out.print(f"{verdict} root and {len(report.shards)} shards, {total} entries in {report.seconds:.2f} s")
    return 0 if report.ok else 1


def cmd_checkpoint(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    if args.list:
        try:
            listed = checkpoint_list(store)
        finally:
            store.close()
        if args.json:
            print_json(out, {"checkpoints": listed})
        else:
            for cp in listed:
                print(f"{cp['size']}\t{cp['root']}")
        return 0
    try:
        chain = read_key_chain(store)
        row = store.checkpoints(args.size)[0] if args.size is not None else store.latest_checkpoint()
        if row is None or (args.size is not None and row.size != args.size):
            raise NotFoundError("no checkpoint" + (f" of size {args.size}" if args.size is not None else " yet"))
        verifier = chain.verifier_for(row.size)
    finally:
        store.close()
    if args.verifier_key:
        if args.json:
            print_json(out, {"verifier_key": str(verifier)})
        else:
            print(verifier)
        return 0
    if args.json:
        print_json(out, {"size": row.size, "note": row.note, "verifier_key": str(verifier)})
    else:
        sys.stdout.write(row.note)
    return 0


def _signed_checkpoint(store: Any, size: int) -> str:
    rows = store.checkpoints(size)
    if not rows or rows[0].size != size:
        raise NotFoundError(f"no signed checkpoint of size {size}")
    return str(rows[0].note)


def cmd_prove(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        from lineage_ledger.core.merkle import TiledNodeReader, inclusion_proof

        reader = TiledNodeReader(store.nodes)
        latest = store.latest_checkpoint()
        if latest is None:
            raise NotFoundError("the ledger has no signed checkpoint yet: seal it first")
        if args.consistency:
            result: dict[str, Any] = consistency_answer(store, *args.consistency)
        else:
            if args.index is None:
                raise CommandError("give an INDEX or --consistency OLD NEW")
            size = args.size or latest.size
            note = _signed_checkpoint(store, size)
            row = store.entry(args.index)
            if args.index >= size:
                raise NotFoundError(f"entry {args.index} is pending: not yet covered by checkpoint {size}")
            result = {
                "index": args.index,
                "tree_size": size,
                "entry": row.body.decode("utf-8"),
                "leaf_hash": leaf_hash(row.body).hex(),
                "inclusion_path": [h.hex() for h in inclusion_proof(args.index, size, reader)],
                "checkpoint": note,
            }
    finally:
        store.close()
    if args.json:
        print_json(out, result)
    else:
        for k, v in result.items():
            out.print(f"[bold]{k}[/]: {v if not isinstance(v, list) else ' '.join(v)}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the commands of this module to the ``lineage`` parser."""
    p = sub.add_parser("verify", parents=[common], help="check every hash, chain, block and signature")
    p.add_argument("--key", help="the log's verifier key (note key string, or a file holding one)")
    p.add_argument("--trusted-checkpoint", help="a signed checkpoint saved earlier; the ledger must extend it")
    p.add_argument(
        "--since",
        metavar="NOTE",
        help="check only what was appended since this signed checkpoint, kept from an earlier verification "
        "(a file holding the note, as `lineage checkpoint` prints it)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    add_policy_arguments(p)
    p.add_argument("--tsa-cert", help="also check the checkpoints' RFC 3161 timestamps against this TSA root (PEM)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("checkpoint", parents=[common], help="print the latest signed checkpoint")
    p.add_argument("--verifier-key", action="store_true", help="print the log's note verifier key instead")
    p.add_argument("--size", type=int, help="the checkpoint of this tree size")
    p.add_argument("--list", action="store_true", help="list every signed checkpoint: size and root hash")
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("prove", parents=[common], help="inclusion or consistency proof")
    p.add_argument("index", nargs="?", type=int, help="entry index")
    p.add_argument("--size", type=int, help="tree size of the checkpoint to prove against (default latest)")
    p.add_argument(
        "--consistency",
        nargs=2,
        type=int,
        metavar=("OLD", "NEW"),
        help="a consistency proof between the signed checkpoints of tree sizes OLD and NEW",
    )
    p.set_defaults(func=cmd_prove)

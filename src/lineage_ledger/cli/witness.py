"""``lineage witness ...``: run a C2SP tlog-witness, and get a ledger's checkpoints cosigned by witnesses.

Also the witness trust policy shared by the verifying commands (``--witness-key``, ``--witness-quorum``)
and the cosigning thread of ``lineage serve`` (``--witness``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from lineage_ledger.core.cosignature import CosignerVerifier, WitnessPolicy, parse_cosigner_key
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.note import NoteVerifier, parse_verifier_key
from lineage_ledger.errors import InputError, KeyringError, LedgerError, NotFoundError
from lineage_ledger.keys import load_signer, load_verifier, write_signer_key
from lineage_ledger.store import open_store

if TYPE_CHECKING:
    from lineage_ledger.ledger.writer import Ledger
    from lineage_ledger.witness.cosigner import Cosigner

__all__ = [
    "add_policy_arguments",
    "add_serve_arguments",
    "check_witnessed",
    "load_witness_key",
    "policy_from",
    "register",
    "start_cosigner",
]

_out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_json(value: Any) -> None:
    print(json.dumps(value))


def load_witness_key(value: str) -> CosignerVerifier:
    """A witness (cosigner) verifier key given inline, or the content of a file holding one."""
    try:
        return parse_cosigner_key(value)
    except InputError as inline:
        if not os.path.isfile(value):
            raise KeyringError(f"{value!r} is neither a witness verifier key ({inline}) nor a key file") from None
    try:
        return parse_cosigner_key(Path(value).read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, InputError) as e:
        raise KeyringError(f"key file {value} does not hold a witness verifier key: {e}") from e


# -- the trust policy of verifying commands ---------------------------------------------------------------


def add_policy_arguments(p: argparse.ArgumentParser) -> None:
    """``--witness-key`` (repeated) and ``--witness-quorum`` on a verifying command."""
    p.add_argument(
        "--witness-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's cosignature verifier key (or a file holding it); repeat for each witness",
    )
    p.add_argument(
        "--witness-quorum",
        type=int,
        metavar="K",
        help="require cosignatures by at least K of the --witness-key witnesses (default: all of them)",
    )


def policy_from(args: argparse.Namespace) -> WitnessPolicy | None:
    """The witness policy the arguments ask for, or None when no witness key was given."""
    if not args.witness_key:
        if args.witness_quorum:
            raise InputError("witness_quorum", "give the witnesses' keys with --witness-key")
        return None
    keys = tuple(load_witness_key(k) for k in args.witness_key)
    quorum = len(set(keys)) if args.witness_quorum is None else args.witness_quorum
    return WitnessPolicy(keys, quorum)


def check_witnessed(url: str, log: NoteVerifier | None, policy: WitnessPolicy) -> tuple[int, int, list[str]]:
    """(size of the latest checkpoint that meets ``policy``, the ledger's latest checkpoint size, problems).

    The size is 0 and a problem says why when no checkpoint of the ledger carries the quorum."""
    store = open_store(url, readonly=True)
    try:
        verifier = log or parse_verifier_key(store.meta()["verifier_key"])
        checkpoints = store.checkpoints()
    finally:
        store.close()
    if not checkpoints:
        return 0, 0, ["the ledger has no signed checkpoint"]
    latest = checkpoints[-1].size
    last_error = ""
    for row in reversed(checkpoints):
        try:
            policy.check(row.note, verifier)
        except LedgerError as e:
            last_error = last_error or f"checkpoint {row.size}: {e}"
            continue
        return row.size, latest, []
    return 0, latest, [f"no checkpoint meets the witness policy ({last_error})"]


# -- lineage serve's cosigning thread ---------------------------------------------------------------------


def start_cosigner(ledger: Ledger, args: argparse.Namespace, registry: Any | None) -> Cosigner | None:
    """Start asking the ``--witness`` witnesses to cosign ``ledger``'s checkpoints, on a daemon thread of
    its own (ingest never waits for a witness); export the lag on ``registry`` if given."""
    if not getattr(args, "witness", None):
        return None
    from lineage_ledger.witness.cosigner import Cosigner, cosign_metrics, parse_witness

    cosigner = Cosigner(ledger.store, [parse_witness(w) for w in args.witness])
    if registry is not None:
        cosign_metrics(cosigner, registry, ledger.origin)
    cosigner.start(args.cosign_seconds if args.cosign_seconds is not None else 2.0)
    return cosigner


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """``--witness`` (repeated) and ``--cosign-seconds`` on ``lineage serve``."""
    p.add_argument(
        "--witness",
        action="append",
        metavar="'URL VKEY'",
        help="ask this witness (its URL prefix and its verifier key) to cosign each checkpoint; repeatable",
    )
    p.add_argument("--cosign-seconds", type=float, help="seconds between cosigning rounds (default 2)")


# -- lineage witness ... ------------------------------------------------------------------------------------


def _vkey_of(path: str) -> CosignerVerifier:
    signer = load_signer(path)
    return CosignerVerifier.from_public_key(signer.name, signer.public_key)


def _init(args: argparse.Namespace) -> int:
    if Path(args.key).exists():
        raise KeyringError(f"key file {args.key} already exists; refusing to overwrite a key")
    Path(args.key).parent.mkdir(parents=True, exist_ok=True)
    write_signer_key(args.key, Ed25519Signer.generate(args.name))
    return _key(args)


def _key(args: argparse.Namespace) -> int:
    vkey = str(_vkey_of(args.key))
    if args.json:
        _print_json({"witness_key": vkey})
    else:
        print(vkey)
    return 0


def _logs(values: list[str]) -> list[Any]:
    from lineage_ledger.witness.witness import WitnessedLog

    keys: dict[str, list[NoteVerifier]] = {}
    for value in values:
        origin, _, key = value.strip().rpartition(" ")
        verifier = load_verifier(key)
        keys.setdefault(origin.strip() or verifier.name, []).append(verifier)
    return [WitnessedLog(origin, tuple(found)) for origin, found in keys.items()]


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lineage_ledger.witness.app import create_witness_app
    except ImportError as e:
        hint = f"the witness needs the [server] extra: pip install 'lineage-ledger[server]' ({e})"
        raise InputError("witness", escape(hint)) from e
    from lineage_ledger.witness.state import WitnessState
    from lineage_ledger.witness.witness import Witness

    if not args.log:
        raise InputError("log", "give at least one log to witness: --log '[ORIGIN] LOG_VERIFIER_KEY'")
    state = WitnessState(args.state)
    try:
        witness = Witness(load_signer(args.key), _logs(args.log), state)
        _err.print(f"witness {escape(str(witness.verifier))} on http://{args.host}:{args.port}")
        uvicorn.run(create_witness_app(witness), host=args.host, port=args.port, access_log=False, log_level="warning")
    finally:
        state.close()
    return 0


def _cosign(args: argparse.Namespace) -> int:
    from lineage_ledger.witness.cosigner import Cosigner, parse_witness

    if not args.witness:
        raise InputError("witness", "give at least one --witness 'URL VKEY'")
    probe = open_store(args.ledger, readonly=True)  # NotFoundError, rather than creating an empty ledger
    try:
        if probe.latest_checkpoint() is None:
            raise NotFoundError("the ledger has no signed checkpoint yet")
    finally:
        probe.close()
    store = open_store(args.ledger)
    try:
        cosigner = Cosigner(store, [parse_witness(w) for w in args.witness], timeout=args.timeout)
        try:
            outcomes = cosigner.run_once(force=True)
        finally:
            cosigner.close()
    finally:
        store.close()
    failed = [o for o in outcomes if o.status == "failed"]
    if args.json:
        _print_json([{"witness": o.witness, "status": o.status, "size": o.size, "detail": o.detail} for o in outcomes])
    else:
        for o in outcomes:
            mark = "[red]failed[/]" if o.status == "failed" else f"[green]{o.status}[/]"
            detail = f": {escape(o.detail)}" if o.detail else ""
            _out.print(f"{escape(o.witness)}: {mark} checkpoint {o.size}{detail}")
    return 1 if failed else 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage witness init|key|serve|cosign`` to the CLI's subcommands."""
    w = sub.add_parser("witness", parents=[common], help="run a C2SP tlog-witness; get checkpoints cosigned")
    ws = w.add_subparsers(dest="witness_command", required=True)

    p = ws.add_parser("init", parents=[common], help="create a witness key file (0600) and print its verifier key")
    p.add_argument("--key", required=True, help="the witness key file to create")
    p.add_argument("--name", required=True, help="the witness's name, e.g. witness.example.com/w1")
    p.set_defaults(func=_init, ledger_default=None)  # a witness reads no ledger

    p = ws.add_parser("key", parents=[common], help="print the witness's cosignature verifier key")
    p.add_argument("--key", required=True, help="the witness key file")
    p.set_defaults(func=_key, ledger_default=None)

    p = ws.add_parser("serve", parents=[common], help="run the witness over HTTP (needs the [server] extra)")
    p.add_argument("--key", required=True, help="the witness key file")
    p.add_argument("--state", required=True, help="the witness's state file (SQLite), created if missing")
    p.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="'[ORIGIN] VKEY'",
        help="a log to witness: its note verifier key (or a file holding it), after its origin when that "
        "differs from the key's name",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    p.set_defaults(func=_serve, ledger_default=None)

    p = ws.add_parser("cosign", parents=[common], help="ask witnesses to cosign the ledger's latest checkpoint")
    p.add_argument("--witness", action="append", default=[], metavar="'URL VKEY'", help="a witness; repeatable")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    p.set_defaults(func=_cosign)

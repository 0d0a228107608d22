"""``lineage apikey ...`` (the HTTP service's API keys) and ``lineage keys rotate-log`` (the log's own key).

Every change is recorded in the ledger, so these commands open it for writing with the log key, and seal at
once so the record is covered by a signed checkpoint.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from rich.console import Console

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.errors import InputError
from lineage_ledger.keys import load_signer, write_signer_key

__all__ = ["parse_duration", "register_apikey", "register_rotate_log", "register_token_secret"]

_out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
_err = Console(stderr=True, highlight=False, soft_wrap=True)
_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, field: str) -> int:
    """Seconds in ``90d``, ``12h``, ``30m``, ``45s`` or ``45``; InputError naming ``field`` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InputError(field, f"{text!r} is not a duration like 90d, 12h, 30m or 45s")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _print_json(value: object) -> None:
    print(json.dumps(value))


# -- API keys ---------------------------------------------------------------------------------------------


def _cmd_apikey(args: argparse.Namespace) -> int:
    from lineage_ledger.cli._common import api_key_path as _api_key_path
    from lineage_ledger.cli._common import open_ledger as _open
    from lineage_ledger.service.auth import ApiKeyStore, utc_time

    path = _api_key_path(args)
    store = ApiKeyStore.load(path)
    command = args.apikey_command
    if command == "list":
        now = store.now()
        infos = [info.to_json(now) for info in store.key_infos()]
        if args.json:
            _print_json(infos)
        for info in [] if args.json else infos:
            who = f"producer={info['producer']}" if info["producer"] else ""
            until = f"expires {info['expires_at']}" if info["expires_at"] else ""
            _out.print(f"{info['key_id']}  {info['role']:<8} {info['state']:<8} {who} {until}".rstrip())
        return 0
    if command == "create" and args.role == "producer" and not args.producer:
        raise InputError("--producer", "--role producer needs --producer ID: the producer id the key may append for")
    raw: str | None = None
    with _open(args) as ledger:
        record = ledger.record_api_key_change
        if command == "create":
            expires_at = args.expires_at
            if args.expires_in is not None:
                expires_at = utc_time(time.time() + parse_duration(args.expires_in, "--expires-in"))
            principal, raw = store.create(args.role, args.producer, expires_at=expires_at, record=record)
            key_id = principal.key_id
        elif command == "rotate":
            grace = parse_duration(args.grace, "--grace")
            rotated, raw = store.rotate(args.key_id, grace_seconds=grace, record=record)
            key_id = rotated.key_id
        else:
            key_id = store.revoke(args.key_id, record=record).key_id
        ledger.seal()
    shown = store.info(key_id).to_json(store.now())
    if args.json:
        _print_json({**shown, **({"api_key": raw} if raw is not None else {})})
        return 0
    if command == "revoke":
        _out.print(f"revoked API key {key_id}: it is refused from its next request on")
        return 0
    what = "created" if command == "create" else f"rotated (the old secret works until {shown['previous_until']})"
    _err.print(f"{what} {shown['role']} API key {key_id} in {path}; it is shown only this once:")
    print(raw)
    return 0


def register_apikey(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add ``lineage apikey create|list|rotate|revoke``."""
    p = sub.add_parser("apikey", parents=[common], help="API keys of the HTTP service (each change a ledger entry)")
    ak = p.add_subparsers(dest="apikey_command", required=True)
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("--api-keys", help="API key file (default <ledger>.apikeys.json)")
    k = ak.add_parser("create", parents=[common, files], help="create a key; it is printed once, only its hash is kept")
    k.add_argument(
        "--role",
        required=True,
        choices=["producer", "auditor", "admin"],
        help="producer: append batches for --producer, revoke, introspect; auditor: read, query, prove, verify; "
        "admin: producer keys, API keys and revocation",
    )
    k.add_argument("--producer", help="the producer id a producer key may append for")
    expiry = k.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", metavar="DURATION", help="the key stops working after this, e.g. 90d, 12h")
    expiry.add_argument("--expires-at", metavar="UTC", help="... or at this UTC time, e.g. 2027-01-31T12:00:00Z")
    k.set_defaults(func=_cmd_apikey)
    k = ak.add_parser("list", parents=[common, files], help="every key with its role and state (never a secret)")
    k.set_defaults(func=_cmd_apikey)
    k = ak.add_parser("rotate", parents=[common, files], help="give a key a new secret, printed once")
    k.add_argument("key_id", help="the key's id (lineage apikey list shows them)")
    k.add_argument(
        "--grace", default="1h", metavar="DURATION", help="how long the old secret keeps working (default 1h; 0: none)"
    )
    k.set_defaults(func=_cmd_apikey)
    k = ak.add_parser("revoke", parents=[common, files], help="revoke a key: refused from its next request on")
    k.add_argument("key_id", help="the key's id (lineage apikey list shows them)")
    k.set_defaults(func=_cmd_apikey)


# -- the log key ------------------------------------------------------------------------------------------


def _cmd_rotate_log(args: argparse.Namespace) -> int:
    from lineage_ledger.cli._common import open_ledger as _open

    with _open(args) as ledger:
        generated = None
        if args.generate:
            new = Ed25519Signer.generate(ledger.verifier.name)
            write_signer_key(args.new_key, new)
            generated = Path(args.new_key)
        try:
            index = ledger.rotate_log_key(new if generated else load_signer(args.new_key))
        except BaseException:
            if generated is not None:  # the rotation did not happen: the key it generated is no one's
                generated.unlink(missing_ok=True)
            raise
        key = str(ledger.verifier)
    if args.json:
        _print_json({"index": index, "verifier_key": key, "new_key_file": args.new_key})
        return 0
    _out.print(f"recorded the log key rotation at index {index}; checkpoints from now on are signed by the new key")
    _out.print(f"new log verifier key: {key}")
    _out.print(f"from now on the ledger opens only with the new key: --log-key {args.new_key}, or put it in place")
    return 0


def register_rotate_log(
    keys: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``lineage keys rotate-log``."""
    k = keys.add_parser(
        "rotate-log",
        parents=[common],
        help="hand the log over to a new checkpoint signing key (the current key signs the hand-over)",
    )
    k.add_argument("--new-key", required=True, metavar="FILE", help="the new log key's file (C2SP signer key)")
    k.add_argument("--generate", action="store_true", help="generate the new key and write it to --new-key (0600)")
    k.set_defaults(func=_cmd_rotate_log)


# -- the token fingerprint secret ---------------------------------------------------------------------------


def _cmd_token_secret(args: argparse.Namespace) -> int:
    from lineage_ledger.cli._common import default_key_path as _default_key_path
    from lineage_ledger.service.auth import TOKEN_SECRET_SUFFIX
    from lineage_ledger.token_secrets import rotate_token_secret

    path = (
        Path(args.token_secret_file) if args.token_secret_file else _default_key_path(args.ledger, TOKEN_SECRET_SUFFIX)
    )
    version = rotate_token_secret(path)
    if args.json:
        _print_json({"file": str(path), "version": version})
        return 0
    _out.print(f"added version {version} to {path}: new token ids end in .v{version}; ids of every earlier")
    _out.print("version stay valid and are looked up too. Restart lineage serve, and give the producers' middleware")
    _out.print(f"the new secret with token_secret_version={version}.")
    return 0


def register_token_secret(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``lineage token-secret rotate``."""
    p = sub.add_parser("token-secret", parents=[common], help="the token fingerprint secret and its versions")
    ts = p.add_subparsers(dest="token_secret_command", required=True)
    k = ts.add_parser("rotate", parents=[common], help="add a new version; earlier versions stay for lookups")
    k.add_argument("--token-secret-file", help="the secret file (default <ledger>.secret)")
    k.set_defaults(func=_cmd_token_secret)

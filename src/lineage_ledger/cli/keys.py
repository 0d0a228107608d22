"""``lineage keys`` lists, registers and revokes producer signing keys (each change a ledger entry, on every shard
of a sharded ledger); ``lineage fingerprint`` prints the token id of a raw token."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lineage_ledger.cli._common import CommandError
from lineage_ledger.cli._common import log_signer as _log_signer
from lineage_ledger.cli._common import open_ledger as _open
from lineage_ledger.cli._common import settings_from as _settings
from lineage_ledger.cli.key_lifecycle import register_rotate_log
from lineage_ledger.cli.options import output_options
from lineage_ledger.cli.query import TIME_HELP, instant_arg
from lineage_ledger.cli.render import output_console, print_json
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.instant import Instant
from lineage_ledger.errors import InputError
from lineage_ledger.keys import write_signer_key
from lineage_ledger.ledger.writer import Ledger

__all__ = ["register"]

out = output_console()


def _reading(instant: Instant | None) -> str | None:
    """A time option as the HLC reading a key window is written in (None: the option was not given)."""
    return None if instant is None else instant.reading()


def _key_ledgers(args: argparse.Namespace) -> list[Ledger]:
    """The ledgers whose keyrings a key command acts on: the ledger, or every shard of a sharded root (each
    shard checks the batches its consumer reads)."""
    from lineage_ledger.ledger.shards import layout_of, shard_url

    ledger = _open(args)
    layout = layout_of(ledger.store)
    if layout is None:
        return [ledger]
    ledger.close()
    shards: list[Ledger] = []
    try:
        for n in range(layout.shards):
            shards.append(Ledger.open(shard_url(args.ledger, n), _log_signer(args), settings=_settings(args)))
    except BaseException:
        for shard in shards:
            shard.close()
        raise
    return shards


def cmd_keys(args: argparse.Namespace) -> int:
    ledgers = _key_ledgers(args)
    if args.keys_command == "list":
        try:
            keys = [
                {
                    "producer": k.producer,
                    "key_id": k.key_id,
                    "public_key": k.public_key.hex(),
                    "valid_from": k.valid_from,
                    "valid_until": k.valid_until,
                    "revoked_at": k.revoked_at,
                }
                for k in ledgers[0].keyring.producer_keys()
            ]
        finally:
            for ledger in ledgers:
                ledger.close()
        if args.json:
            print_json(out, keys)
        else:
            for k in keys:
                state = f"revoked at {k['revoked_at']}" if k["revoked_at"] else "active"
                out.print(f"{k['key_id']}  producer={k['producer']}  from={k['valid_from']}  {state}")
        return 0
    try:
        if args.keys_command == "register":
            if args.generate:
                signer = Ed25519Signer.generate(args.producer)
                write_signer_key(args.generate, signer)
                public = signer.public_key
            elif args.public_key:
                public = bytes.fromhex(args.public_key)
            else:
                raise CommandError("give --public-key HEX or --generate FILE")
            for ledger in ledgers:
                index = ledger.register_key(
                    args.producer,
                    args.key_id,
                    public,
                    valid_from=_reading(args.valid_from),
                    valid_until=_reading(args.valid_until),
                )
        else:
            for ledger in ledgers:
                index = ledger.revoke_key(args.key_id, at=_reading(args.at))
        for ledger in ledgers:
            ledger.seal()
    finally:
        for ledger in ledgers:
            ledger.close()
    if args.json:
        print_json(out, {"index": index})
    else:
        out.print(f"recorded key change at index {index}")
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from lineage_ledger.token_secrets import load_token_secrets

    secrets = load_token_secrets(args.secret_file)
    token = sys.stdin.readline().strip()
    if not token:
        raise InputError("token", "read no token on standard input")
    ids = secrets.candidates(token, args.region) if args.all_versions else [secrets.fingerprint(token, args.region)]
    if args.json:
        print_json(out, {"token_id": ids[0], **({"token_ids": ids} if args.all_versions else {})})
    else:
        print("\n".join(ids))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the commands of this module to the ``lineage`` parser."""
    p = sub.add_parser(
        "keys", parents=[common], help="producer signing keys and the log key (each change a ledger entry)"
    )
    ks = p.add_subparsers(dest="keys_command", required=True)
    k = ks.add_parser("list", parents=[common], help="every producer key and its state")
    k.set_defaults(func=cmd_keys)
    k = ks.add_parser("register", parents=[common], help="record a producer's public key")
    k.add_argument("--producer", required=True, help="the producer id the key signs batches for")
    k.add_argument("--key-id", required=True, help="the key's id, named in every batch it signs")
    k.add_argument("--public-key", help="hex Ed25519 public key")
    k.add_argument("--generate", help="generate a key pair and write the private key to this file (0600)")
    k.add_argument(
        "--valid-from",
        type=instant_arg("--valid-from"),
        help="when the key may start signing (default: now); " + TIME_HELP,
    )
    k.add_argument(
        "--valid-until", type=instant_arg("--valid-until"), help="when it stops (default: no end); " + TIME_HELP
    )
    k.set_defaults(func=cmd_keys)
    k = ks.add_parser("revoke", parents=[common], help="record that a key signs nothing from an instant on")
    k.add_argument("--key-id", required=True, help="the key to revoke")
    k.add_argument("--at", type=instant_arg("--at"), help="when the key stops signing (default: now); " + TIME_HELP)
    k.set_defaults(func=cmd_keys)
    register_rotate_log(ks, common)

    output = output_options()
    p = sub.add_parser("fingerprint", parents=[output], help="token id of a raw token read from stdin")
    p.add_argument(
        "--secret-file",
        required=True,
        help="the token HMAC secret the producers and lineage serve share (serve's default: <ledger>.secret)",
    )
    p.add_argument("--region", help="prefix the id with this region ('eu-west-1' gives 'eu-west-1:<hex>')")
    p.add_argument("--all-versions", action="store_true", help="the id under every secret version, newest first")
    p.set_defaults(func=cmd_fingerprint)

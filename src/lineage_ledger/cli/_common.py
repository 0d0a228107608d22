"""What every command group of the ``lineage`` command shares: where the log key and the files beside an
embedded ledger are, the ledger settings the options give, and opening the ledger (or one of its shards)
for writing. Nothing here prints or exits; a command-line mistake raises CommandError."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.errors import InputError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, load_signer
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store.sqlite import sqlite_path_from_url

if TYPE_CHECKING:
    from lineage_ledger.ledger.shards import ShardLayout
    from lineage_ledger.token_secrets import TokenSecrets

__all__ = [
    "API_KEY_ENV_VAR",
    "TOKEN_SECRET_ENV_VAR",
    "CommandError",
    "api_key_path",
    "default_key_path",
    "ledger_file",
    "log_signer",
    "open_ledger",
    "open_shard",
    "producer_key_id",
    "settings_from",
    "token_secrets_from",
]


class CommandError(Exception):
    """A command-line mistake (exit 2)."""


def ledger_file(url: str) -> Path | None:
    """The file of an embedded ledger at ``url``, or None (PostgreSQL, in memory)."""
    path = sqlite_path_from_url(url.split("?", 1)[0]) if not url.startswith("postgres") else ":memory:"
    return None if path == ":memory:" else Path(path)


def default_key_path(url: str, suffix: str = ".key", option: str = "--log-key or set $LINEAGE_LOG_KEY") -> Path:
    """The file ``<ledger file><suffix>`` beside an embedded ledger; CommandError naming ``option`` otherwise."""
    path = ledger_file(url)
    if path is None:
        raise CommandError(f"give {option}: this ledger is not a file, so no key file can sit beside it")
    return path.with_name(path.name + suffix)


def log_signer(args: argparse.Namespace) -> Signer:
    """The log's signing key: ``--log-key``, else ``$LINEAGE_LOG_KEY``, else the key file beside the ledger."""
    if args.log_key:
        return load_signer(args.log_key)
    if os.environ.get(DEFAULT_KEY_ENV_VAR):
        return load_signer(None)
    return load_signer(default_key_path(args.ledger))


def settings_from(args: argparse.Namespace, *, long_running: bool = False) -> LedgerSettings:
    """The ledger settings from the command line; ``long_running`` for a process that is the sequencer for
    as long as it runs (serve, consume), which may then tune the process for steady latency."""
    return LedgerSettings(
        block_size=getattr(args, "block_size", None) or 10_000,
        block_seconds=getattr(args, "block_seconds", None) or 5.0,
        freeze_gc_at_seal=long_running,
    )


def open_ledger(args: argparse.Namespace, *, long_running: bool = False) -> Ledger:
    """The ledger ``--ledger``, open for writing with the log key and the settings the options give."""
    return Ledger.open(args.ledger, log_signer(args), settings=settings_from(args, long_running=long_running))


def open_shard(args: argparse.Namespace) -> tuple[Ledger, ShardLayout]:
    """Shard ``--shard`` of the sharded ledger ``--ledger``, open for writing (signed with the root's log key),
    and the root's layout. InputError if --ledger is not a sharded root or has no such shard."""
    from lineage_ledger.ledger.shards import read_layout, shard_url

    layout = read_layout(args.ledger)
    if layout is None:
        raise InputError("--shard", f"{args.ledger} is not the root of a sharded ledger")
    if not 0 <= args.shard < layout.shards:
        raise InputError("--shard", f"{args.ledger} has shards 0 to {layout.shards - 1}, not {args.shard}")
    settings = settings_from(args, long_running=True)
    return Ledger.open(shard_url(args.ledger, args.shard), log_signer(args), settings=settings), layout


API_KEY_ENV_VAR = "LINEAGE_API_KEY"
"""The environment variable holding the service API key of ``lineage emit`` and ``lineage receipt``."""

TOKEN_SECRET_ENV_VAR = "LINEAGE_TOKEN_SECRET"  # noqa: S105 - the name of a variable, not a secret


def token_secrets_from(args: argparse.Namespace) -> TokenSecrets:
    """The fingerprint secret a command uses: --token-secret-file, else $LINEAGE_TOKEN_SECRET (one
    version), else <ledger>.secret (created 0600 if absent); every version the file holds."""
    from lineage_ledger.service.auth import TOKEN_SECRET_SUFFIX, create_token_secret
    from lineage_ledger.token_secrets import TokenSecrets, load_token_secrets

    if args.token_secret_file:
        return load_token_secrets(args.token_secret_file)
    from_env = os.environ.get(TOKEN_SECRET_ENV_VAR, "").strip().encode()
    if from_env:
        return TokenSecrets.single(from_env)  # InputError (exit 2) for a secret that is too short
    path = default_key_path(args.ledger, TOKEN_SECRET_SUFFIX)
    return load_token_secrets(path) if path.exists() else TokenSecrets.single(create_token_secret(path))


def api_key_path(args: argparse.Namespace) -> Path:
    """--api-keys, else the API key file beside the ledger."""
    from lineage_ledger.service.auth import API_KEYS_SUFFIX

    return Path(args.api_keys) if args.api_keys else default_key_path(args.ledger, API_KEYS_SUFFIX)


def producer_key_id(signer: Signer) -> str:
    """The default id of a producer key: its name and the first 4 bytes of its public key's leaf hash."""
    return f"{signer.name}-{leaf_hash(signer.public_key)[:4].hex()}"

"""The options many ``lineage`` commands share, each defined once, and their defaults.

argparse copies everything a subcommand's parser holds, defaults included, over what the enclosing parser
has already parsed; so ``lineage query --ledger X timeline T`` would lose X to the ``timeline`` parser's
default. Shared options are therefore declared without a default at every level where they may be given
(``argparse.SUPPRESS``: absent from the namespace unless given), and ``fill_defaults`` supplies the
defaults once parsing is done. An explicit value wins wherever on the command line it is given.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from lineage_ledger.core.model import TOKEN_ID_FORM, is_token_id
from lineage_ledger.errors import InputError, NotFoundError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR
from lineage_ledger.store import open_store
from lineage_ledger.store.sqlite import sqlite_path_from_url

__all__ = [
    "BATCH_HELP",
    "DEFAULT_LEDGER",
    "TOKEN_ID_HELP",
    "fill_defaults",
    "ledger_options",
    "output_options",
    "package_version",
    "require_ledger",
    "shared_options",
    "subject_argument",
    "token_id_argument",
]

BATCH_HELP = "events per signed batch (default 1000)"
"""The help of ``--batch`` wherever a command signs batches."""

DEFAULT_LEDGER = "./lineage.db"
"""The ledger every command uses when no ``--ledger`` is given (``lineage demo`` has its own)."""


def output_options() -> argparse.ArgumentParser:
    """A parent parser holding ``--json``, for commands that read no ledger."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return parent


def ledger_options(default: str = DEFAULT_LEDGER) -> argparse.ArgumentParser:
    """A parent parser holding ``--ledger`` and ``--log-key``; ``default`` is the ledger used without
    ``--ledger``. A command given these reads an existing ledger unless its parser sets
    ``creates_ledger=True``; one under a group that has them but reads no ledger sets ``ledger_default=None``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--ledger",
        default=argparse.SUPPRESS,
        help=f"ledger URL: a path, sqlite:///path or postgresql://... (default {default})",
    )
    parent.add_argument(
        "--log-key",
        default=argparse.SUPPRESS,
        help=f"log signing key file (else ${DEFAULT_KEY_ENV_VAR}, else <ledger>.key beside the ledger)",
    )
    parent.set_defaults(ledger_default=default, creates_ledger=False)
    return parent


def shared_options() -> argparse.ArgumentParser:
    """A parent parser holding ``--ledger``, ``--log-key`` and ``--json``: what most commands take."""
    return argparse.ArgumentParser(add_help=False, parents=[ledger_options(), output_options()])


def package_version() -> str:
    """The installed lineage-ledger distribution's version, for ``--version``."""
    try:
        return importlib.metadata.version("lineage-ledger")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def fill_defaults(args: argparse.Namespace) -> None:
    """Give every shared option that was not on the command line its default."""
    if not hasattr(args, "json"):
        args.json = False
    if getattr(args, "ledger_default", None) is not None:
        if not hasattr(args, "ledger"):
            args.ledger = args.ledger_default
        if not hasattr(args, "log_key"):
            args.log_key = None


def _shown(url: str) -> str:
    """``url`` without a password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def require_ledger(url: str) -> None:
    """InputError naming ``url`` unless it names a ledger that exists: a file there, or for PostgreSQL a
    database that ``lineage init`` has initialised. Only the commands that create a ledger skip this, so a
    mistyped --ledger never quietly makes a new, empty one."""
    missing = InputError(
        "--ledger",
        f"no ledger at {_shown(url)}: give the --ledger of an existing one, or create it with "
        f"lineage init --ledger {_shown(url)}",
    )
    if url.startswith(("postgresql://", "postgres://")):
        try:
            store = open_store(url, readonly=True)
        except NotFoundError as e:  # reachable, but no ledger schema; an unreachable server is another error
            raise missing from e
        try:
            if not store.meta():
                raise missing
        finally:
            store.close()
        return
    path = sqlite_path_from_url(url.split("?", 1)[0])
    if path != ":memory:" and not Path(path).exists():
        raise missing


TOKEN_ID_HELP = (
    "a token id: the token's fingerprint (64 hex digits, optionally '<region>:' first; "  # noqa: S105 - not a secret
    "lineage fingerprint makes one from a raw token), with or without 'token:' first"
)


def token_id_argument(text: str) -> str:
    """argparse ``type`` of a token id argument: the id as given, or a usage error (exit 2) saying the form.
    The value is not repeated in the message: it may be a raw token pasted by mistake."""
    if not is_token_id(text.removeprefix("token:")):
        raise argparse.ArgumentTypeError(
            f"not a token id ({len(text)} characters): expected {TOKEN_ID_FORM}; "
            "lineage fingerprint --secret-file FILE makes one from a raw token"
        )
    return text


def subject_argument(text: str) -> str:
    """argparse ``type`` of a subject argument: a token id (as token_id_argument) or a prefixed subject
    (``asset:``, ``policy:``, ``producer:``)."""
    if text.startswith(("asset:", "policy:", "producer:")) and len(text.partition(":")[2]) > 0:
        return text
    return token_id_argument(text)

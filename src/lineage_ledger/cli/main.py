"""The ``lineage`` command: its parser, assembled from the command modules of this package (one per group of
commands), and main(), which runs one and turns errors into exit codes. Only the CLI prints or exits.

Every command takes ``--ledger URL`` (default ``./lineage.db``; a path or ``sqlite:///path``) and ``--json``;
only ``init`` and ``demo`` create a ledger, every other command refuses a missing one (cli.options).
The log's signing key is read from ``--log-key FILE``, else ``$LINEAGE_LOG_KEY``, else ``<ledger>.key``
beside an embedded ledger; it never lives in the database.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.markup import escape

from lineage_ledger.cli import demo_bench, emit, keys, ledger_commands, serve, verify_commands
from lineage_ledger.cli._common import API_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR, CommandError
from lineage_ledger.cli.archive import register as register_archive
from lineage_ledger.cli.events import register as register_events
from lineage_ledger.cli.evidence import register as register_evidence
from lineage_ledger.cli.export import register as register_export
from lineage_ledger.cli.findings import register as register_findings
from lineage_ledger.cli.kafka import register as register_kafka
from lineage_ledger.cli.key_lifecycle import register_apikey, register_token_secret
from lineage_ledger.cli.monitor import register as register_monitor
from lineage_ledger.cli.options import fill_defaults, package_version, require_ledger, shared_options
from lineage_ledger.cli.query import register as register_query
from lineage_ledger.cli.receipt import register as register_receipt
from lineage_ledger.cli.render import error_console, silence_stdout
from lineage_ledger.cli.rollups import register as register_rollup
from lineage_ledger.cli.subject import register as register_subject
from lineage_ledger.cli.tiles import register as register_tiles
from lineage_ledger.cli.timestamp import register as register_timestamp
from lineage_ledger.cli.witness import register as register_witness
from lineage_ledger.errors import InputError, LedgerError

__all__ = ["API_KEY_ENV_VAR", "TOKEN_SECRET_ENV_VAR", "main"]

err = error_console()


# -- wiring: each command lives in the module of its group; this is the order `lineage --help` lists them -----


def _parser() -> argparse.ArgumentParser:
    common = shared_options()
    parser = argparse.ArgumentParser(prog="lineage", description="A tamper-evident ledger of token lineage.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    ledger_commands.register(sub, common)
    verify_commands.register(sub, common)
    register_query(sub, common)
    register_rollup(sub, common)
    register_evidence(sub, common)
    register_subject(sub, common)
    register_findings(sub, common)
    register_export(sub, common)
    register_archive(sub, common)
    register_kafka(sub, common)
    register_tiles(sub, common)
    register_monitor(sub)
    register_events(sub, common)
    register_receipt(sub, common)
    register_witness(sub, common)
    register_timestamp(sub, common)
    ledger_commands.register_trace(sub, common)
    keys.register(sub, common)
    register_token_secret(sub, common)
    serve.register(sub, common)
    register_apikey(sub, common)
    emit.register(sub, common)
    demo_bench.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code: 0 ok, 1 verification failed, 2 bad input or usage (a missing ledger
    or input file included), 3 other error (an unknown token, checkpoint or entry included), 141 when the
    reader of the output went away (as for a command killed by SIGPIPE)."""
    args = _parser().parse_args(argv)
    fill_defaults(args)
    # messages are escaped: rich would take a bracketed part of one ("[a-z]", "[server]") for markup
    try:
        if getattr(args, "ledger_default", None) is not None and not args.creates_ledger:
            require_ledger(args.ledger)
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a reader that went away (BrokenPipeError) is handled, not at exit
        return code
    except CommandError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        return 2
    except InputError as e:
        err.print(f"[red]bad input:[/] {escape(str(e))}")
        return 2
    except LedgerError as e:
        err.print(f"[red]error:[/] {type(e).__name__}: {escape(str(e))}")
        return 3
    except BrokenPipeError:
        silence_stdout()
        return 141
    except (FileNotFoundError, IsADirectoryError) as e:
        where = f": {e.filename}" if e.filename else ""
        err.print(f"[red]error:[/] {escape((e.strerror or str(e)) + where)}")
        return 2
    except (OSError, ValueError) as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

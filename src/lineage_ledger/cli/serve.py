"""``lineage serve`` runs the HTTP service in front of a ledger (or one shard of a sharded ledger); it needs the
``[server]`` extra."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lineage_ledger.cli._common import TOKEN_SECRET_ENV_VAR, CommandError
from lineage_ledger.cli._common import api_key_path as _api_key_path
from lineage_ledger.cli._common import default_key_path as _default_key_path
from lineage_ledger.cli._common import open_ledger as _open
from lineage_ledger.cli._common import open_shard as _open_shard
from lineage_ledger.cli._common import token_secrets_from as _token_secret
from lineage_ledger.cli.render import error_console
from lineage_ledger.cli.timestamp import add_serve_arguments as add_timestamp_arguments
from lineage_ledger.cli.timestamp import start_timestamper
from lineage_ledger.cli.witness import add_serve_arguments, start_cosigner
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.keys import load_signer, write_signer_key
from lineage_ledger.ledger.writer import Ledger

__all__ = ["register"]

err = error_console()


def _served_ledger(args: argparse.Namespace) -> Ledger:
    """The ledger ``lineage serve`` writes: --ledger, or with --shard its shard n (a sharded ledger is served by
    one process per shard; they share the root's log key, API keys, token secret and service key)."""
    return _open(args, long_running=True) if args.shard is None else _open_shard(args)[0]


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lineage_ledger.service.app import create_app
    except ImportError as e:
        raise CommandError(
            f"the HTTP service needs the [server] extra: pip install 'lineage-ledger[server]' ({e})"
        ) from e
    from lineage_ledger.service.auth import ApiKeyStore

    api_keys = ApiKeyStore.load(_api_key_path(args))
    if not api_keys.principals():
        err.print(f"[yellow]warning:[/] no API keys yet: create one with lineage apikey create --ledger {args.ledger}")
    secret = _token_secret(args)
    service_key = Path(args.service_key) if args.service_key else _default_key_path(args.ledger, ".service.key")
    if not service_key.exists():
        from lineage_ledger.service.app import SERVICE_PRODUCER

        write_signer_key(service_key, Ed25519Signer.generate(SERVICE_PRODUCER))
    with _served_ledger(args) as ledger:
        introspector = None
        if args.redis:
            from lineage_ledger.state import open_introspector

            introspector = open_introspector(ledger, args.redis)  # catches up, then follows every commit
        metrics = None
        if args.metrics_port is not None:
            from lineage_ledger.metrics import LedgerMetrics

            metrics = LedgerMetrics.serving(ledger, args.metrics_port, args.metrics_addr)
        cosigner = start_cosigner(ledger, args, metrics.registry if metrics is not None else None)
        timestamper = start_timestamper(ledger, args)
        app = create_app(
            ledger,
            api_keys=api_keys,
            token_secret=secret,
            max_body_bytes=args.max_body_bytes,
            service_signer=load_signer(service_key),
            introspector=introspector,
            public_log=args.public_log,
        )
        # uvicorn's access log would print request paths and queries; the app logs route templates only.
        try:
            uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_config=_SERVE_LOGGING)
        finally:
            if cosigner is not None:
                cosigner.close()
            if timestamper is not None:
                timestamper.close()
    return 0


_SERVE_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "lineage_ledger": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the commands of this module to the ``lineage`` parser."""
    p = sub.add_parser("serve", parents=[common], help="run the HTTP service (needs the [server] extra)")
    p.add_argument(
        "--redis",
        metavar="URL",
        help="keep hot token state in Redis and introspect from it (the [redis] extra), e.g. redis://127.0.0.1/0",
    )
    p.add_argument(
        "--shard",
        type=int,
        help="serve shard N of the sharded ledger --ledger (one process per shard; see lineage emit --url)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this host only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port to listen on (default 8080)")
    p.add_argument("--api-keys", help="API key file (default <ledger>.apikeys.json)")
    p.add_argument(
        "--token-secret-file", help=f"token HMAC secret (else ${TOKEN_SECRET_ENV_VAR}, else <ledger>.secret)"
    )
    p.add_argument("--service-key", help="the service's own producer key (default <ledger>.service.key, created)")
    p.add_argument(
        "--max-body-bytes", type=int, default=16 * 1024 * 1024, help="largest request body accepted (default 16 MiB)"
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port, apart from the API")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address of the metrics port (default loopback)")
    p.add_argument("--block-size", type=int, help="seal at this many entries (default 10000)")
    p.add_argument("--block-seconds", type=float, help="... or at this block age (default 5)")
    p.add_argument(
        "--public-log",
        action="store_true",
        help="serve the log's checkpoint and tiles (C2SP tlog-tiles: /checkpoint, /tile/...) without an API key",
    )
    add_serve_arguments(p)
    add_timestamp_arguments(p)
    p.set_defaults(func=cmd_serve)

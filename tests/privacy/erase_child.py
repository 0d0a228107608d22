"""Run ``lineage subject erase`` in this process and die (os._exit, as a kill would: nothing is flushed or
closed) right after the step named by argv[1]: ``marked`` (the keys are marked in the key store) or
``recorded`` (the erasure entry is committed, the keys not yet destroyed). The rest of argv is the command."""

from __future__ import annotations

import os
import sys
from typing import Any

from lineage_ledger.cli.main import main
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.privacy.keystore import KeyRow, SqliteKeyStore


def _die_after(real: Any) -> Any:
    def step(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        os._exit(9)
        return result

    return step


def run() -> None:
    point, argv = sys.argv[1], sys.argv[2:]
    if point == "marked":
        real_mark = SqliteKeyStore.mark_erasing

        def mark(self: SqliteKeyStore, fingerprint: str) -> list[KeyRow]:
            return _die_after(real_mark)(self, fingerprint)  # type: ignore[no-any-return]

        SqliteKeyStore.mark_erasing = mark  # type: ignore[method-assign]
    elif point == "recorded":
        Ledger.record_erasure = _die_after(Ledger.record_erasure)  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown point {point}")
    sys.exit(main(argv))


if __name__ == "__main__":
    run()

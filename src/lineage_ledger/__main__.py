"""``python -m lineage_ledger``: the ``lineage`` command."""

from __future__ import annotations

import sys

from lineage_ledger.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

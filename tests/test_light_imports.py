"""Importing the package or a producer-side SDK loads no part of the ledger's write path.

A producer service imports the emitter (or the Kafka producer) into its own process: it must not pay for,
or be exposed to, the store drivers, the writer and the verifier it never uses.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import lineage_ledger

# What a producer may load of this package: the pure core, the error tree, and its own adapter.
PRODUCER_SIDE = ("lineage_ledger.core", "lineage_ledger.errors", "lineage_ledger.emitter", "lineage_ledger.kafka")


def _loaded(statement: str) -> list[str]:
    listing = "print(json.dumps(sorted(m for m in sys.modules if m.startswith('lineage_ledger'))))"
    probe = f"{statement}\nimport json, sys\n{listing}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded: list[str] = json.loads(out)
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import lineage_ledger",
        "import lineage_ledger.emitter",
        "from lineage_ledger.emitter import Emitter, HttpTransport",
        "import lineage_ledger.kafka.producer",
    ],
)
def test_a_producer_import_loads_no_write_path(statement: str) -> None:
    loaded = _loaded(statement)
    write_path = [m for m in loaded if m.startswith(("lineage_ledger.ledger", "lineage_ledger.store"))]
    assert write_path == [], f"{statement} loads the write path: {write_path}"
    outside = [m for m in loaded if m != "lineage_ledger" and not m.startswith(PRODUCER_SIDE)]
    assert outside == [], f"{statement} loads more than the core and its own adapter: {outside}"


def test_the_write_path_names_still_resolve_from_the_package_root() -> None:
    """Lazily loaded names are the real objects, and unknown names still raise AttributeError."""
    from lineage_ledger.ledger.verify import verify_ledger
    from lineage_ledger.ledger.writer import Ledger

    assert lineage_ledger.Ledger is Ledger
    assert lineage_ledger.verify_ledger is verify_ledger
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = lineage_ledger.no_such_name

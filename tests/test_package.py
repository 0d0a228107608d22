"""The public API is small, sorted and importable; the pure core imports nothing that does I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lineage_ledger

SRC = Path(lineage_ledger.__file__).parent
# What the pure layer (core/) may import: the standard library's pure parts, the two libraries it is built
# on, its own modules and the error tree. No sqlite3, socket, os, subprocess, http, logging or adapters.
PURE_ALLOWED = {
    "__future__", "base64", "binascii", "collections", "dataclasses", "enum", "functools", "hashlib", "hmac",
    "itertools", "math", "re", "struct", "typing", "bisect", "operator", "abc",
    "secrets",  # key generation only: randomness, not I/O the caller could inject
    "msgspec", "cryptography", "lineage_ledger",
}  # fmt: skip
PURE_INTERNAL = ("lineage_ledger.core", "lineage_ledger.errors")


def test_public_api_is_sorted_and_importable() -> None:
    names = lineage_ledger.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert all(not n.startswith("_") for n in names)
    for name in names:
        assert getattr(lineage_ledger, name) is not None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_core_is_pure() -> None:
    offenders = []
    core = sorted((SRC / "core").glob("*.py"))
    assert len(core) >= 10
    for path in core:
        for module in _imports(path):
            top = module.split(".")[0]
            if top not in PURE_ALLOWED:
                offenders.append(f"{path.name} imports {module}")
            elif top == "lineage_ledger" and not module.startswith(PURE_INTERNAL):
                offenders.append(f"{path.name} imports {module} (a layer above core)")
    assert not offenders, offenders


def test_layers_point_downwards() -> None:
    """store/ may use core/, ledger/ may use store/ and core/; none of them may import an adapter."""
    adapters = (
        "lineage_ledger.cli",
        "lineage_ledger.service",
        "lineage_ledger.emitter",
        "lineage_ledger.webhook",
        "lineage_ledger.kafka",
        "lineage_ledger.state",
    )
    offenders = []
    for layer in ("core", "store", "ledger"):
        for path in sorted((SRC / layer).glob("*.py")):
            for module in _imports(path):
                if module.startswith(adapters) or (layer == "store" and module.startswith("lineage_ledger.ledger")):
                    offenders.append(f"{layer}/{path.name} imports {module}")
    assert not offenders, offenders


def test_importing_the_package_loads_no_driver() -> None:
    """Optional integrations are extras, imported only inside their adapter modules."""
    probe = (
        "import sys, lineage_ledger, lineage_ledger.store, lineage_ledger.ledger.lineage;"
        "print(sorted(m for m in ('psycopg', 'redis', 'fastapi', 'uvicorn', 'httpx', 'flask', 'confluent_kafka', "
        "'fastavro') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

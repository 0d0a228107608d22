"""The offline verifier stands alone: an auditor can copy ``offline.py`` and run it with only ``cryptography``.

Two checks: its import statements name only the standard library and ``cryptography`` (read with ``ast``),
and, in a fresh interpreter where importing msgspec, rich or any part of lineage_ledger fails loudly, the
file loads by path under a neutral name and verifies a real bundle, leaving none of them in sys.modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from lineage_ledger import offline
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.store import open_store
from tests.conftest import BuiltLedger, token_id

OFFLINE = Path(offline.__file__)
FORBIDDEN = ("msgspec", "rich", "lineage_ledger")
ALLOWED_THIRD_PARTY = {"cryptography"}

PROBE = """
import importlib.abc
import importlib.util
import json
import sys

path, bundle_path, key = sys.argv[1:]
forbidden = {forbidden!r}


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, target=None, path=None):
        if name.split(".")[0] in forbidden:
            raise ImportError(f"the offline verifier imported {{name}}")
        return None


sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location("vendored_evidence_verifier", path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
with open(bundle_path, "rb") as f:
    report = module.verify_bundle(f.read(), log_key=key)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({{"ok": report.ok, "problems": list(report.problems), "loaded": loaded}}))
"""


def import_roots(tree: ast.Module) -> list[tuple[str, int]]:
    roots: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.extend((alias.name.split(".")[0], 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.append(((node.module or "").split(".")[0], node.level))
    return roots


def test_offline_imports_only_the_standard_library_and_cryptography() -> None:
    roots = import_roots(ast.parse(OFFLINE.read_text(encoding="utf-8")))
    assert roots, "the parser found no imports at all"
    assert all(level == 0 for _, level in roots), "relative imports tie the file to the package"
    outside = {name for name, _ in roots if name not in sys.stdlib_module_names and name != "__future__"}
    assert outside == ALLOWED_THIRD_PARTY
    assert not {name for name, _ in roots} & set(FORBIDDEN)


def test_import_statements_are_found_anywhere_in_a_module() -> None:
    """The ast walk sees imports nested in functions too, so a lazy import cannot slip past the check above."""
    tree = ast.parse("import json\ndef f():\n    from lineage_ledger.core import smt\n    import rich.console\n")
    assert import_roots(tree) == [("json", 0), ("lineage_ledger", 0), ("rich", 0)]


def test_offline_loads_and_verifies_in_a_fresh_interpreter_without_the_package(
    built_ledger: BuiltLedger, tmp_path: Path
) -> None:
    store = open_store(built_ledger.url, readonly=True)
    try:
        bundle = export_evidence(store, token_id("t-0"))
    finally:
        store.close()
    bundle_path = tmp_path / "bundle.json"
    bundle_path.write_bytes(bundle)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE.format(forbidden=FORBIDDEN),
            str(OFFLINE),
            str(bundle_path),
            str(built_ledger.verifier),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["loaded"] == []
    assert result["problems"] == []
    assert result["ok"] is True


def test_the_stand_alone_copy_of_the_map_prefixes_agrees_with_the_map() -> None:
    from lineage_ledger.core import smt

    assert offline._MAP_LEAF_PREFIX == smt.LEAF_PREFIX
    assert offline._MAP_INTERIOR_PREFIX == smt.INTERIOR_PREFIX

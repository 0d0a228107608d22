"""The service package's surface, and the core install working without the ``[server]`` extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lineage_ledger.service as service_package
from lineage_ledger.service import app as app_module
from lineage_ledger.service import auth, problems

WITHOUT_SERVER_EXTRA = """
import sys
sys.modules["fastapi"] = None  # makes "import fastapi" fail, as on a core-only install
sys.modules["uvicorn"] = None
from lineage_ledger.cli.main import main
import lineage_ledger.service
assert main(["init", "--ledger", sys.argv[1]]) == 0
assert main(["apikey", "create", "--ledger", sys.argv[1], "--role", "auditor", "--json"]) == 0
assert main(["serve", "--ledger", sys.argv[1]]) == 2
assert main(["checkpoint", "--ledger", sys.argv[1]]) == 0  # other commands still load
"""


def test_public_names_are_exported_and_resolve() -> None:
    for module in (service_package, app_module, auth, problems):
        names = list(module.__all__)
        assert len(names) == len(set(names)), module.__name__
        for name in names:
            assert getattr(module, name) is not None, (module.__name__, name)
    assert service_package.create_app is app_module.create_app
    assert set(service_package.__all__) == {"ROLES", "ApiKeyStore", "Principal", "Role", "create_app"}


def test_core_install_needs_no_server_extra(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SERVER_EXTRA, str(tmp_path / "core.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "needs the [server] extra" in done.stderr
    assert (tmp_path / "core.db.apikeys.json").is_file()

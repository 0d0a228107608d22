"""`make demo` installs the package alone and runs on it; `make test` installs the tools the tests need.

The Makefile is read through `make -n` (what it would run, for a virtualenv that does not exist yet), and the
demo runs in a child interpreter in which every optional dependency and test tool fails to import, so the
demo cannot lean on one without this test failing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Everything pyproject.toml installs beyond the package's own dependencies: extras, linters, test tools.
NOT_FOR_THE_DEMO = (
    "fastapi", "uvicorn", "httpx", "psycopg", "redis", "confluent_kafka", "fastavro", "prometheus_client",
    "flask", "hypothesis", "mypy", "prov", "pytest", "xdist", "rfc8785", "ruff", "pyarrow",
)  # fmt: skip


def planned(target: str, venv: Path) -> list[str]:
    """The commands `make -n target` prints for a virtualenv at ``venv`` that does not exist yet."""
    make = shutil.which("make")
    assert make is not None, "make is not on PATH"
    done = subprocess.run(
        [make, "-n", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def pip_installs(commands: list[str]) -> list[str]:
    return [c for c in commands if "pip install" in c and "--upgrade pip" not in c]


def test_make_demo_installs_the_package_alone(tmp_path: Path) -> None:
    installs = pip_installs(planned("demo", tmp_path / "venv"))
    assert installs, "make demo must install the package"
    assert all(c.rstrip().endswith("-e .") for c in installs), installs


def test_make_test_installs_the_test_tools(tmp_path: Path) -> None:
    commands = planned("test", tmp_path / "venv")
    assert any("'.[dev]'" in c for c in pip_installs(commands)), commands
    assert any(c.endswith("/ruff check src tests benchmarks") for c in commands)
    assert any(c.endswith("/mypy") for c in commands)


def test_demo_runs_without_extras_or_test_tools(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        BLOCKED = {NOT_FOR_THE_DEMO!r}

        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is not installed by make demo")
                return None

        for name in list(sys.modules):
            if name.split(".")[0] in BLOCKED:
                del sys.modules[name]
        sys.meta_path.insert(0, Absent())
        from lineage_ledger.cli.main import main
        sys.exit(main(["demo", "--tokens", "30", "--ledger", sys.argv[1]]))
        """
    )
    env = {**os.environ, "COLUMNS": "200"}
    ledger = tmp_path / "demo" / "demo.db"
    done = subprocess.run(
        [sys.executable, "-c", script, str(ledger)], check=False, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "try: lineage verify" in done.stdout
    assert ledger.is_file()

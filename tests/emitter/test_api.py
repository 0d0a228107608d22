"""The emitter package's public API: small, sorted, documented, and free of optional imports until used."""

from __future__ import annotations

import inspect
import subprocess
import sys

import lineage_ledger.emitter as emitter_api
from lineage_ledger.emitter import metrics, middleware, sender, spool, transport


def test_all_is_sorted_and_exported() -> None:
    for module in (emitter_api, metrics, middleware, sender, spool, transport):
        names = module.__all__
        assert names == sorted(names), module.__name__
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_every_public_name_and_method_is_documented() -> None:
    for module in (emitter_api, metrics, middleware, sender, spool, transport):
        assert module.__doc__
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{module.__name__}.{name}"
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                        assert inspect.getdoc(member), f"{module.__name__}.{name}.{attr}"


def test_importing_the_sdk_pulls_in_no_web_framework_or_http_client() -> None:
    code = (
        "import sys, lineage_ledger.emitter\n"
        "loaded = [m for m in ('httpx', 'starlette', 'fastapi', 'flask', 'werkzeug') if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == ""

"""The HTTP service (the ``[server]`` extra): a FastAPI app in front of one Ledger, run by ``lineage serve``.

``create_app`` lives in :mod:`lineage_ledger.service.app` and needs FastAPI; importing this package needs
nothing beyond the core install, so ``lineage apikey create`` works without the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lineage_ledger.service.auth import ROLES, ApiKeyStore, Principal, Role

if TYPE_CHECKING:
    from lineage_ledger.service.app import create_app

__all__ = ["ROLES", "ApiKeyStore", "Principal", "Role", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from lineage_ledger.service.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

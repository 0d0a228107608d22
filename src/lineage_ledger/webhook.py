"""Delivering findings to a webhook (a SIEM, a chat hook, an incident tool): the one sink that does network I/O,
so it lives with the adapters rather than in ledger/."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.errors import InputError, TransportError
from lineage_ledger.ledger.findings import Finding

if TYPE_CHECKING:
    import httpx

__all__ = ["WebhookSink"]


def _redacted(url: str) -> str:
    """The URL without credentials, query or fragment, which may hold secrets, for error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class WebhookSink:
    """POSTs findings as JSON batches ``{"findings": [...]}`` (canonical JSON, at most ``batch_size`` each).

    A batch that cannot be delivered (connection error, timeout, a status other than 2xx) raises
    TransportError; nothing is retried here, so the caller decides (the emitter's spool is one option).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        batch_size: int = 500,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as e:  # pragma: no cover - the [emitter] extra is part of dev installs
            raise TransportError("WebhookSink needs httpx: pip install 'lineage-ledger[emitter]'") from e
        if batch_size < 1:
            raise InputError("batch_size", "must be at least 1")
        self.url = url
        self.batch_size = batch_size
        self._httpx = httpx
        self._client: httpx.Client = httpx.Client(
            timeout=timeout, headers={"content-type": "application/json", **(headers or {})}
        )

    def emit(self, findings: Sequence[Finding]) -> None:
        """Deliver ``findings`` in order, one POST per batch."""
        for start in range(0, len(findings), self.batch_size):
            body = canonical_bytes({"findings": [f.to_json() for f in findings[start : start + self.batch_size]]})
            try:
                response = self._client.post(self.url, content=body)
            except self._httpx.HTTPError as e:
                raise TransportError(f"webhook {_redacted(self.url)}: {type(e).__name__}") from e
            if not 200 <= response.status_code < 300:
                raise TransportError(f"webhook {_redacted(self.url)} answered HTTP {response.status_code}")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> WebhookSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

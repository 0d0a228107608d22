"""Where findings go: the ``FindingSink`` interface, ``LogSink`` (the logging module) and ``JsonLinesSink``
(one canonical JSON object per line, for a SIEM). ``lineage_ledger.webhook.WebhookSink`` posts them over HTTP."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from typing import IO, Any, Final, Protocol

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.ledger.finding_rules import Finding

__all__ = ["FindingSink", "JsonLinesSink", "LogSink"]


class FindingSink(Protocol):
    """Where findings go. ``emit`` receives them in the order they were found."""

    def emit(self, findings: Sequence[Finding]) -> None:
        """Deliver ``findings`` (raise a LedgerError subclass if they could not be delivered)."""
        ...

    def close(self) -> None:
        """Release what the sink holds."""
        ...


_LEVELS: Final[dict[str, int]] = {
    "low": logging.INFO,
    "medium": logging.WARNING,
    "high": logging.ERROR,
    "critical": logging.CRITICAL,
}


class LogSink:
    """Logs each finding at a level that follows its severity (low INFO ... critical CRITICAL).

    The record's ``finding`` attribute holds ``Finding.to_json()`` for structured handlers.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("lineage_ledger.findings")

    def emit(self, findings: Sequence[Finding]) -> None:
        """Log every finding."""
        for f in findings:
            self.logger.log(
                _LEVELS[f.severity],
                "%s %s on %s at %s: %s",
                f.severity,
                f.rule,
                f.subject,
                ",".join(map(str, f.indices)),
                f.message,
                extra={"finding": f.to_json()},
            )

    def close(self) -> None:
        """Nothing to release."""


class JsonLinesSink:
    """Appends one canonical JSON object per finding and line (keys sorted) to a file or an open stream.

    A path is opened for appending and closed by ``close``; a stream is flushed after every batch and
    left open.
    """

    def __init__(self, target: str | os.PathLike[str] | IO[bytes] | IO[str]) -> None:
        self._owned = isinstance(target, str | os.PathLike)
        stream: IO[Any] = open(target, "ab") if isinstance(target, str | os.PathLike) else target  # noqa: SIM115
        self._stream = stream
        self._text = isinstance(stream, io.TextIOBase)

    def emit(self, findings: Sequence[Finding]) -> None:
        """Write and flush one line per finding."""
        data = b"".join(canonical_bytes(f.to_json()) + b"\n" for f in findings)
        self._stream.write(data.decode("utf-8") if self._text else data)
        self._stream.flush()

    def close(self) -> None:
        """Close the file if this sink opened it (a stream handed in stays open)."""
        if self._owned:
            self._stream.close()

    def __enter__(self) -> JsonLinesSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Named points of the archive's steps where a test can have the process killed (docs/archive.md).

With ``LINEAGE_ARCHIVE_CRASH_AT=<point>`` in the environment, the process sends itself SIGKILL on reaching
that point, so crash tests stop a real ``lineage archive`` exactly between two of its steps. Unset (always,
in production), a point does nothing.
"""

from __future__ import annotations

import os
import signal
from typing import Final

__all__ = ["CRASH_ENV", "POINTS", "crash_point"]

CRASH_ENV: Final = "LINEAGE_ARCHIVE_CRASH_AT"
POINTS: Final = ("writing", "written", "verified", "recorded", "deleted", "expire-recorded")


def crash_point(point: str) -> None:
    """Die here, by SIGKILL, if the environment names ``point``."""
    if os.environ.get(CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)

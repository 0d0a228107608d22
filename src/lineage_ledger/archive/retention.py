"""Retention: the policy in force (a signed ``archive`` entry of action ``policy``) and its application.

A policy names how long entries stay hot (``hot_days``: ``lineage archive`` moves older blocks out), how
long archive files count as warm (``archive_days``, reported) and how long entries are kept at all
(``keep_days``). ``apply_retention`` records, for each archived range whose newest entry is older than
``keep_days``, a signed ``expire`` entry naming the policy (with the store row that marks the range
expired, in one transaction), and only then deletes the file. A crash in between leaves an expired range
whose file is still there; the next run deletes it. Reads of expired entries raise ExpiredError naming
the policy (archive.tiered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lineage_ledger.archive.crash import crash_point
from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.core.entry import ARCHIVE_SUBJECT, ArchiveChange, ArchiveEntry, SealEntry, decode_entry
from lineage_ledger.errors import InputError, NotFoundError
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store.base import BatchWrite, ExpiryRow, Store

__all__ = ["DAY_NS", "Policy", "apply_retention", "current_policy", "set_policy"]

DAY_NS: Final = 86_400 * 1_000_000_000
_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


@dataclass(frozen=True, slots=True)
class Policy:
    """A retention policy as recorded at log index ``index``."""

    name: str
    hot_days: int
    archive_days: int
    keep_days: int
    index: int


def current_policy(store: Store) -> Policy | None:
    """The latest retention policy recorded in the log, if any."""
    found = None
    for row in store.subject_entries([ARCHIVE_SUBJECT]):
        entry = decode_entry(row.body)
        if isinstance(entry, ArchiveEntry) and entry.change.action == "policy":
            c = entry.change
            found = Policy(str(c.policy), c.hot_days or 0, c.archive_days or 0, c.keep_days or 0, row.index)
    return found


def set_policy(ledger: Ledger, name: str, hot_days: int, archive_days: int, keep_days: int) -> Policy:
    """Record the retention policy ``name`` as the one in force; InputError if its windows do not nest
    (0 < hot_days <= keep_days, archive_days <= keep_days)."""
    import re

    if not re.fullmatch(_NAME, name):
        raise InputError("--name", f"{name!r} is not a policy name (letters, digits, '.', '_', '-'; up to 64)")
    if not 0 < hot_days <= keep_days:
        raise InputError("--hot-days", f"must be between 1 and --keep-days ({keep_days}), got {hot_days}")
    if not 0 <= archive_days <= keep_days:
        raise InputError("--archive-days", f"must be between 0 and --keep-days ({keep_days}), got {archive_days}")
    change = ArchiveChange(
        action="policy", policy=name, hot_days=hot_days, archive_days=archive_days, keep_days=keep_days
    )
    index = ledger.record_archive_change(change)
    return Policy(name, hot_days, archive_days, keep_days, index)


def _last_recorded(store: Store, last: int) -> str:
    seal = decode_entry(store.entry(last).body)
    if not isinstance(seal, SealEntry):
        raise NotFoundError(f"entry {last} ends an archived range but is not a seal")
    return seal.block.hlc_last


def apply_retention(ledger: Ledger, now_ns: int) -> tuple[Policy, list[ExpiryRow]]:
    """Expire every archived range whose newest entry is older than the policy's ``keep_days`` at
    ``now_ns``: record it, then delete its file. Returns the policy and the ranges expired (now or by an
    earlier run that stopped before deleting the file)."""
    store = ledger.store
    policy = current_policy(store)
    if policy is None:
        raise InputError("retention", "no retention policy is recorded: set one with lineage retention set")
    cutoff = now_ns - policy.keep_days * DAY_NS
    expired = {e.first: e for e in store.expiries()}
    out: list[ExpiryRow] = []
    for archive in store.archives():
        row = expired.get(archive.first)
        if row is None:
            if int(_last_recorded(store, archive.last).split(".")[0]) >= cutoff:
                continue
            change = ArchiveChange(
                action="expire",
                policy=policy.name,
                policy_index=policy.index,
                first=archive.first,
                last=archive.last,
                file=archive.file,
                sha256=archive.sha256.hex(),
            )

            def rows_for(index: int, a: int = archive.first, b: int = archive.last) -> BatchWrite:
                return BatchWrite(expiries=[ExpiryRow(a, b, policy.name, policy.index, index)])

            record = ledger.record_archive_change(change, rows_for)
            row = ExpiryRow(archive.first, archive.last, policy.name, policy.index, record)
            crash_point("expire-recorded")
        ArchiveLocation(archive.location).delete(archive.file)
        out.append(row)
    refresh = getattr(store, "refresh", None)
    if callable(refresh):
        refresh()
    return policy, out

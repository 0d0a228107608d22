"""What the checks start from, read before the entries: the settings recorded at creation (present, and of the
format this verifier knows), the log key chain (core.log_key, followed from the trusted key), the producer
keys from the key entries in the log itself, and the stored rows that tell how the log is cut."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lineage_ledger.core.entry import BLOCKS_SUBJECT, KeyEntry, decode_entry
from lineage_ledger.core.lifecycle import LifecyclePolicy
from lineage_ledger.core.note import NoteVerifier, parse_verifier_key
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger import stored_rows
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.log_keys import check_key_chain
from lineage_ledger.ledger.verification.derived import links_below
from lineage_ledger.ledger.verification.report import Problem, VerifyReport
from lineage_ledger.ledger.writer import FORMAT
from lineage_ledger.store import open_store
from lineage_ledger.store.base import CheckpointRow, EntryRow

__all__ = ["LedgerSetup", "LogKeys", "log_keys", "meta_problems", "producer_keyring", "read_setup", "recorded_policy"]


@dataclass(frozen=True, slots=True)
class LogKeys:
    """The log keys checkpoints are checked under."""

    keys: list[NoteVerifier]
    """Every key that may have signed a checkpoint."""
    signing_key: Callable[[int], NoteVerifier]
    """The key that must have signed a checkpoint of a given tree size."""


@dataclass(frozen=True, slots=True)
class LedgerSetup:
    """What verify_ledger reads before the entries."""

    meta: dict[str, str]
    log_keys: LogKeys
    policy: LifecyclePolicy
    size: int
    seal_rows: list[EntryRow]
    checkpoints: list[CheckpointRow]
    keyring: Keyring
    links_below: int | None
    """Below this index the store must hold every lineage link (None: the links are not checked)."""
    subjects_below: int | None
    """Below this index the subject index must hold every entry (None: the store keeps none to check)."""
    rollups_end: int | None = None
    """The end of the last day with stored rollups (None: none are stored)."""

    @property
    def origin(self) -> str:
        """The log's origin line, as recorded at creation."""
        return self.meta["origin"]


def meta_problems(meta: dict[str, str]) -> list[Problem]:
    """The settings recorded at creation: present, complete, of the format this verifier knows, and a log
    verifier key copy that parses. Nothing else can be checked without them."""
    if not meta:
        return [Problem("meta", "the store holds no ledger")]
    if missing := stored_rows.meta_problems(meta, FORMAT):
        return [Problem("meta", message, index) for message, index in missing]
    try:
        parse_verifier_key(meta.get("verifier_key", ""))
    except LedgerError as e:
        return [Problem("meta", f"the verifier key copy in the database: {e}")]
    return []


def log_keys(store: Any, verifier: NoteVerifier | None, report: VerifyReport) -> LogKeys:
    """The log keys from ``verifier`` (a key held outside the database) or, without it, from the database's
    own copy, which ``report.key_source`` then calls untrusted; a broken rotation is added to ``report``.

    A checkpoint of a given size must be signed by the chain's key for that size when the chain starts from
    or reaches the trusted key; otherwise by that key alone (and the chain is reported)."""
    chain, chain_problems = check_key_chain(store, verifier)
    if verifier is None:
        verifier = chain.original
        report.key_source = "database copy (untrusted: pass --key to verify against a key you hold)"
    else:
        report.key_source = "given"
    report.problems.extend(
        Problem("meta" if index is None else "log_key", message, index) for index, message in chain_problems
    )
    if verifier in chain.verifiers():
        return LogKeys(chain.verifiers(), chain.verifier_for)
    only = verifier

    def the_given_key(_size: int) -> NoteVerifier:
        return only

    return LogKeys([only], the_given_key)


def recorded_policy(meta: dict[str, str], report: VerifyReport) -> LifecyclePolicy:
    """The lifecycle policy recorded at creation (the default one when none was); one that does not parse
    is a problem, and the default is judged under instead."""
    try:
        return LifecyclePolicy.from_text(meta["lifecycle"]) if "lifecycle" in meta else LifecyclePolicy()
    except LedgerError as e:
        report.problems.append(Problem("meta", f"the recorded lifecycle policy: {e}"))
        return LifecyclePolicy()


def producer_keyring(store: Any, report: VerifyReport) -> Keyring:
    """The producer keys, from the key entries in the log itself; an entry that is not one is a problem."""
    keyring = Keyring()
    for row in store.subjects_with_prefix("producer:"):
        try:
            entry = decode_entry(row.body)
            if not isinstance(entry, KeyEntry):
                raise LedgerError("not a key entry")
            keyring.apply(entry.change)
        except LedgerError as e:
            report.problems.append(Problem("key", f"key entry {row.index}: {e}", row.index))
    return keyring


def read_setup(url: str, verifier: NoteVerifier | None, report: VerifyReport) -> LedgerSetup | None:
    """Everything verify_ledger reads before the entries, with what is wrong added to ``report``; None when
    the settings recorded at creation are missing or unusable. The store is closed on return, so no
    connection stays open across a fork."""
    store = open_store(url, readonly=True)
    try:
        meta = store.meta()
        if found := meta_problems(meta):
            report.problems.extend(found)
            return None
        keys = log_keys(store, verifier, report)
        policy = recorded_policy(meta, report)
        size = store.size()
        report.size = size
        # the log is indexes 0 .. size-1; a row below 0 is outside it, so nothing else would look at it
        lowest = store.lowest_index()
        if lowest is not None and lowest < 0:
            report.problems.append(
                Problem("insertion", f"the store holds a row at index {lowest}, outside the log", lowest)
            )
        seal_rows = store.subject_entries([BLOCKS_SUBJECT])
        checkpoints = store.checkpoints()
        report.checkpoints = len(checkpoints)
        keyring = producer_keyring(store, report)
        below = links_below(store, max((row.size for row in checkpoints), default=0))
        kept = store.subject_index_rows()
        days = store.rollup_days()
        return LedgerSetup(
            meta,
            keys,
            policy,
            size,
            seal_rows,
            checkpoints,
            keyring,
            below,
            None if kept is None else kept[0],
            days[-1].end if days else None,
        )
    finally:
        store.close()

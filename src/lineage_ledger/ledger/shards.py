"""Sharded logs: one log per partition group, and a root log whose checkpoints commit to all of them.

Layout. A sharded ledger is a *root* ledger at URL ``R`` and ``S`` shard ledgers at :func:`shard_url` (R, n).
The root's settings record ``shards`` (S) and ``partitions`` (P, the Kafka topic's partition count, a multiple
of S). A subject lives in shard ``shard_of(subject) = murmur2(key) mod P mod S`` (core.routing), so shard n
holds exactly the events of the topic's partitions p with ``p mod S == n`` and one consumer per shard reads
its own partitions. Each shard is a whole ledger: its own sequencer, blocks, subject map and signed
checkpoints (origin ``<root origin>/shard-<n>``), written by one process, with no coordination between
shards. Throughput therefore adds up: S shards on S cores ingest S times one shard's rate, less what they
share (the disk, the database server).

Root log. :func:`collect` reads each shard's newest signed checkpoint and, if the root has not recorded it
yet, checks its signature and origin and appends it to the root log as a ``shard`` entry (chained per
shard), then seals the root. One signed root checkpoint thus commits to the state of every shard; the
root's own consistency proofs show that no shard's recorded history was ever rewritten.

Verification (:func:`verify_sharded`) verifies the root and every shard in full, then checks that every
checkpoint the root recorded for a shard is one the shard's verified log signed, with sizes growing along
each shard's chain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.entry import ShardEntry, decode_entry, shard_subject
from lineage_ledger.core.envelope import open_envelope
from lineage_ledger.core.model import read_subject
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note, parse_verifier_key
from lineage_ledger.core.routing import shard_of
from lineage_ledger.errors import InputError, LedgerError, NotFoundError, VerificationError
from lineage_ledger.ledger.verify import Problem, VerifyReport, verify_ledger
from lineage_ledger.ledger.writer import AppendResult, Ledger, LedgerSettings
from lineage_ledger.store import open_store
from lineage_ledger.store.base import CheckpointRow, Store

__all__ = [
    "ShardLayout",
    "ShardedLedger",
    "ShardedReport",
    "collect",
    "layout_of",
    "read_layout",
    "shard_url",
    "verify_sharded",
]


def shard_url(root_url: str, shard: int) -> str:
    """Where shard ``shard`` of the sharded ledger at ``root_url`` lives.

    SQLite: the file beside the root's, ``ledger.db`` -> ``ledger.shard-2.db``. PostgreSQL: the database
    named like the root's with ``_shard_2`` added, on the same server, with the same credentials.
    """
    if root_url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(root_url)
        name = parts.path.lstrip("/")
        if not name:
            raise InputError("ledger", "a sharded PostgreSQL ledger's URL must name its database")
        return urlunsplit(parts._replace(path=f"/{name}_shard_{shard}"))
    base, sep, query = root_url.partition("?")
    prefix = "sqlite:///" if base.startswith("sqlite:///") else ""
    path = Path(base.removeprefix(prefix))
    name = f"{path.stem}.shard-{shard}{path.suffix}" if path.suffix else f"{path.name}.shard-{shard}"
    return prefix + str(path.with_name(name)) + sep + query


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """How a sharded ledger splits its subjects."""

    origin: str
    shards: int
    partitions: int

    def shard_of(self, subject: str) -> int:
        """The shard holding ``subject`` (``token:<fingerprint>``, ``asset:<id>``, ``policy:<id>``)."""
        return shard_of(subject, self.partitions, self.shards)

    def partitions_of(self, shard: int) -> list[int]:
        """The topic partitions whose events shard ``shard`` holds."""
        return [p for p in range(self.partitions) if p % self.shards == shard]

    def shard_origin(self, shard: int) -> str:
        """The checkpoint origin line of shard ``shard``."""
        return f"{self.origin}/shard-{shard}"


def layout_of(store: Store) -> ShardLayout | None:
    """The layout of the root ledger in ``store``, or None if it is not a sharded ledger's root."""
    meta = store.meta()
    if "shards" not in meta:
        return None
    return ShardLayout(meta["origin"], int(meta["shards"]), int(meta["partitions"]))


def read_layout(url: str) -> ShardLayout | None:
    """The layout of the ledger at ``url`` if it is a sharded ledger's root, else None (read-only)."""
    store = open_store(url, readonly=True)
    try:
        return layout_of(store)
    finally:
        store.close()


def _checkpoint(note: str, key: NoteVerifier) -> Checkpoint:
    """The checkpoint in a signed note, if ``key`` signed it (SignatureError otherwise)."""
    return Checkpoint.from_text(open_note(note, [key])[0])


def _last_recorded(root: Store, shard: int, key: NoteVerifier) -> Checkpoint | None:
    rows = root.subject_entries([shard_subject(shard)])
    if not rows:
        return None
    entry = decode_entry(rows[-1].body)
    assert isinstance(entry, ShardEntry)
    return _checkpoint(entry.checkpoint, key)


def collect(root: Ledger, shard_stores: Sequence[Store], verifier: NoteVerifier | None = None) -> CheckpointRow | None:
    """Record every shard's newest checkpoint the root has not recorded, then seal the root.

    ``verifier`` checks the shards' notes (default: the root's own log key, which signs the shards too).
    Returns the new root checkpoint, or None if no shard had anything new. Raises VerificationError if a
    shard's newest checkpoint is not signed by the key, names another origin, or is smaller than one the root
    already recorded (a rolled-back shard).
    """
    layout = layout_of(root.store)
    if layout is None:
        raise NotFoundError(f"{root.store.url} is not the root of a sharded ledger")
    key = verifier or root.verifier
    recorded = False
    for shard, store in enumerate(shard_stores):
        latest = store.latest_checkpoint()
        if latest is None:
            continue
        checkpoint = _checkpoint(latest.note, key)
        if checkpoint.origin != layout.shard_origin(shard):
            raise VerificationError(f"shard {shard}'s checkpoint names origin {checkpoint.origin!r}")
        before = _last_recorded(root.store, shard, key)
        if before is not None:
            if checkpoint.size < before.size:
                raise VerificationError(
                    f"shard {shard} is at size {checkpoint.size}, but the root recorded size {before.size}"
                )
            if checkpoint.size == before.size:
                continue
        root.record_shard_checkpoint(shard, latest.note)
        recorded = True
    return root.seal() if recorded else None


class ShardedLedger:
    """A root ledger and all its shard ledgers in one process (tools, tests, single-process ingest).

    In production each shard has its own writer process (``lineage consume --shard n``) and one process runs
    :func:`collect` periodically (``lineage shards collect``); this class is the same thing in one place.
    """

    def __init__(self, root: Ledger, shards: list[Ledger]) -> None:
        layout = layout_of(root.store)
        if layout is None:
            raise NotFoundError(f"{root.store.url} is not the root of a sharded ledger")
        if len(shards) != layout.shards:
            raise InputError("shards", f"the layout has {layout.shards} shards, {len(shards)} were given")
        self.root = root
        self.shards = shards
        self.layout = layout

    @classmethod
    def create(
        cls,
        url: str,
        signer: Signer,
        *,
        shards: int,
        partitions: int,
        origin: str | None = None,
        settings: LedgerSettings | None = None,
    ) -> ShardedLedger:
        """Create the root at ``url`` and its shards beside it (ConflictError if any exists)."""
        if shards < 1 or partitions < shards or partitions % shards:
            raise InputError("partitions", f"must be a multiple of shards ({shards}), got {partitions}")
        name = origin or signer.name
        layout = ShardLayout(name, shards, partitions)
        opened: list[Ledger] = []
        try:
            for n in range(shards):
                where = {"shard_index": str(n), "shard_count": str(shards), "shard_partitions": str(partitions)}
                opened.append(
                    Ledger.create(
                        shard_url(url, n), signer, origin=layout.shard_origin(n), meta=where, settings=settings
                    )
                )
            meta = {"shards": str(shards), "partitions": str(partitions)}
            root = Ledger.create(url, signer, origin=name, meta=meta, settings=settings)
        except BaseException:
            for ledger in opened:
                ledger.close()
            raise
        return cls(root, opened)

    @classmethod
    def open(cls, url: str, signer: Signer, *, settings: LedgerSettings | None = None) -> ShardedLedger:
        """Open the root at ``url`` and every shard for writing."""
        root = Ledger.open(url, signer, settings=settings)
        layout = layout_of(root.store)
        if layout is None:
            root.close()
            raise NotFoundError(f"{url} is not the root of a sharded ledger")
        shards: list[Ledger] = []
        try:
            for n in range(layout.shards):
                shards.append(Ledger.open(shard_url(url, n), signer, settings=settings))
        except BaseException:
            for ledger in [root, *shards]:
                ledger.close()
            raise
        return cls(root, shards)

    def ledger_for(self, subject: str) -> Ledger:
        """The shard ledger holding ``subject``."""
        return self.shards[self.layout.shard_of(subject)]

    def append(self, envelope: bytes) -> AppendResult:
        """Append a batch to its shard. Every event must belong to one shard (the Kafka transport seals one
        envelope per partition, so its envelopes do); InputError otherwise."""
        shards = {self.layout.shard_of(read_subject(e)[0]) for e in open_envelope(envelope).events}
        if len(shards) != 1:
            raise InputError("envelope", f"its events belong to shards {sorted(shards)}; seal one per shard")
        return self.shards[shards.pop()].append(envelope)

    def register_key(self, producer: str, key_id: str, public_key: bytes, **kwargs: Any) -> None:
        """Register a producer key in every shard (each shard checks the batches it receives)."""
        for ledger in self.shards:
            ledger.register_key(producer, key_id, public_key, **kwargs)

    def seal(self) -> CheckpointRow | None:
        """Seal every shard, record their checkpoints in the root and seal it; the root checkpoint."""
        for ledger in self.shards:
            ledger.seal()
        return collect(self.root, [ledger.store for ledger in self.shards])

    def close(self) -> None:
        """Close the root and every shard."""
        for ledger in [*self.shards, self.root]:
            ledger.close()

    def __enter__(self) -> ShardedLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class ShardedReport:
    """The outcome of verify_sharded: the root's report, each shard's, and the cross-shard checks."""

    root: VerifyReport
    shards: list[VerifyReport]
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the root, every shard and every cross check passed."""
        return self.root.ok and all(r.ok for r in self.shards) and not self.problems

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "ok": self.ok,
            "root": self.root.to_json(),
            "shards": [r.to_json() for r in self.shards],
            "problems": [{"kind": p.kind, "message": p.message, "index": p.index} for p in self.problems],
            "size": self.root.size + sum(r.size for r in self.shards),
            "seconds": round(self.seconds, 3),
        }


def verify_sharded(url: str, *, verifier: NoteVerifier | None = None, workers: int | None = None) -> ShardedReport:
    """Verify the root at ``url``, every shard, and that the root records only checkpoints the shards signed."""
    started = time.perf_counter()
    root_report = verify_ledger(url, verifier=verifier, workers=workers)
    store = open_store(url, readonly=True)
    try:
        layout = layout_of(store)
        if layout is None:
            raise NotFoundError(f"{url} is not the root of a sharded ledger")
        key = verifier or parse_verifier_key(store.meta()["verifier_key"])
        recorded = {n: store.subject_entries([shard_subject(n)]) for n in range(layout.shards)}
    finally:
        store.close()
    reports: list[VerifyReport] = []
    problems: list[Problem] = []
    for n in range(layout.shards):
        surl = shard_url(url, n)
        reports.append(verify_ledger(surl, verifier=key, workers=workers))
        shard_store = open_store(surl, readonly=True)
        try:
            signed = {row.note for row in shard_store.checkpoints()}
            origin = shard_store.meta().get("origin")
        finally:
            shard_store.close()
        if origin != layout.shard_origin(n):
            problems.append(Problem("shard", f"shard {n} has origin {origin!r}, not {layout.shard_origin(n)!r}"))
        last_size = -1
        for row in recorded[n]:
            entry = decode_entry(row.body)
            if not isinstance(entry, ShardEntry):
                problems.append(Problem("shard", f"root entry {row.index} is not a shard entry", row.index))
                continue
            try:
                checkpoint = _checkpoint(entry.checkpoint, key)
            except LedgerError as e:
                problems.append(Problem("shard", f"root entry {row.index}: shard {n}'s note: {e}", row.index))
                continue
            if entry.checkpoint not in signed:
                problems.append(
                    Problem(
                        "shard",
                        f"root entry {row.index} records a checkpoint of size {checkpoint.size} that shard {n}'s "
                        "log does not hold (rewritten or rolled back)",
                        row.index,
                    )
                )
            if checkpoint.size <= last_size:
                problems.append(Problem("shard", f"root entry {row.index}: shard {n}'s size does not grow", row.index))
            last_size = checkpoint.size
    return ShardedReport(root_report, reports, problems, time.perf_counter() - started)

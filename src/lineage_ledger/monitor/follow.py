"""Follow a published log through its tiles and say when it misbehaves (docs/monitor.md).

Each ``Monitor.round()`` fetches the signed checkpoint, compares it with the last checkpoint the monitor
verified (kept in a state file, replaced atomically) and with the largest one the witnesses cosigned, reads
every new entry from the tiles, ties them to the signed root, checks them (monitor.entries) and returns what
it found. Alerts: ``rollback`` (the log shrank), ``fork`` (another root for a size already verified, or a
tree that does not extend it), ``bad_tile`` (tiles or entry bundles that do not hash to the signed root),
``bad_entry``, ``bad_checkpoint`` (signature), ``witness_quorum`` / ``bad_cosignature``, ``stall`` and
``unreachable``. The state only moves forward to a checkpoint whose tiles and consistency checked out.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage_ledger.core.cosignature import CosignerVerifier, verify_cosignatures
from lineage_ledger.core.lifecycle import LifecyclePolicy
from lineage_ledger.core.merkle import CompactRange
from lineage_ledger.core.note import Checkpoint
from lineage_ledger.errors import (
    InconsistencyError,
    InputError,
    ProofError,
    RootMismatchError,
    SignatureError,
    StoreError,
    TransportError,
)
from lineage_ledger.monitor.entries import EntryFollower
from lineage_ledger.tile_client import TileClient

__all__ = ["ALERTS", "Monitor", "MonitorFinding", "MonitorState", "is_alert"]

ALERTS = (
    "bad_checkpoint",
    "bad_cosignature",
    "bad_entry",
    "bad_tile",
    "fork",
    "rollback",
    "stall",
    "unreachable",
    "witness_quorum",
)
"""Every kind of alert a round can raise."""

_STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class MonitorFinding:
    """What one round saw: ``kind`` is one of ALERTS, or ``verified`` (the log was checked up to ``size``)."""

    kind: str
    message: str
    size: int | None = None
    index: int | None = None

    @property
    def alert(self) -> bool:
        """True for every kind but ``verified``."""
        return self.kind != "verified"

    def to_json(self, log: str, at: float) -> dict[str, Any]:
        """The finding as one JSON-lines record."""
        out: dict[str, Any] = {
            "alert": self.alert,
            "kind": self.kind,
            "log": log,
            "message": self.message,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        }
        if self.size is not None:
            out["size"] = self.size
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass
class MonitorState:
    """What the monitor trusts between rounds: the checkpoint it verified last, the largest checkpoint the
    witnesses cosigned, the compact range of the verified tree, the entry checks' state, when it last grew."""

    note: str | None = None
    witnessed: str | None = None
    tree: list[str] = field(default_factory=list)
    entries: EntryFollower = field(default_factory=EntryFollower)
    last_growth: float | None = None

    @staticmethod
    def checkpoint_of(note: str | None) -> Checkpoint | None:
        """The checkpoint of a note this state kept (its signature was checked when it was kept)."""
        return None if note is None else Checkpoint.from_text(note.split("\n\n", 1)[0] + "\n")

    def save(self, path: Path) -> None:
        """Write the state to ``path`` atomically: a reader (or a crash) sees the old file or the new one."""
        value = {
            "version": _STATE_VERSION,
            "checkpoint": self.note,
            "witnessed": self.witnessed,
            "tree": self.tree,
            "entries": self.entries.to_json(),
            "last_growth": self.last_growth,
        }
        data = json.dumps(value, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise StoreError(f"cannot write the monitor state {path}: {e}") from e
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: Path, *, verdicts: bool, policy: LifecyclePolicy) -> MonitorState:
        """The state in ``path``, or a fresh one if there is no such file; InputError if it is not a state."""
        try:
            value = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(entries=EntryFollower(verdicts=verdicts, policy=policy))
        except (OSError, ValueError) as e:
            raise InputError("state", f"{path} is not a monitor state file ({e})") from None
        if not isinstance(value, dict) or value.get("version") != _STATE_VERSION:
            raise InputError("state", f"{path} is not a version {_STATE_VERSION} monitor state file")
        growth = value.get("last_growth")
        return cls(
            note=value.get("checkpoint"),
            witnessed=value.get("witnessed"),
            tree=[str(h) for h in value.get("tree", [])],
            entries=EntryFollower.from_json(value.get("entries"), verdicts=verdicts, policy=policy),
            last_growth=float(growth) if growth is not None else None,
        )


class Monitor:
    """Follows one log. ``witnesses``/``quorum``: the cosigners whose cosignatures the checkpoint must carry;
    ``stall_seconds``: the operator's promise that the log grows at least that often (None: no promise)."""

    def __init__(
        self,
        client: TileClient,
        state_path: Path,
        *,
        witnesses: tuple[CosignerVerifier, ...] = (),
        quorum: int = 0,
        stall_seconds: float | None = None,
        verdicts: bool = True,
        policy: LifecyclePolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if quorum > len(set(witnesses)):
            raise InputError("witness_quorum", f"{quorum} cosignatures asked of {len(set(witnesses))} witness keys")
        self.client = client
        self.state_path = state_path
        self.witnesses = witnesses
        self.quorum = quorum
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.state = MonitorState.load(state_path, verdicts=verdicts, policy=policy or LifecyclePolicy())
        self.entries_checked = 0
        self._pending_witnessed: str | None = None

    def round(self) -> list[MonitorFinding]:
        """One look at the log: what it found, alerts first. The state file is updated before it returns."""
        now = self.clock()
        state = self.state
        if state.last_growth is None:
            state.last_growth = now
        findings = self._look()
        if self.stall_seconds is not None and now - state.last_growth > self.stall_seconds:
            findings.insert(
                0,
                MonitorFinding(
                    "stall",
                    f"the log has not grown for {now - state.last_growth:.0f} s "
                    f"(the operator promises growth every {self.stall_seconds:g} s)",
                    self._size(state.note),
                ),
            )
        state.save(self.state_path)
        return findings

    @staticmethod
    def _size(note: str | None) -> int | None:
        cp = MonitorState.checkpoint_of(note)
        return None if cp is None else cp.size

    def _look(self) -> list[MonitorFinding]:
        try:
            signed = self.client.checkpoint()
        except SignatureError as e:
            return [MonitorFinding("bad_checkpoint", f"the checkpoint is not signed by the log's key: {e}")]
        except (TransportError, StoreError) as e:
            return [MonitorFinding("unreachable", f"cannot fetch the checkpoint: {e}")]
        except InputError as e:
            return [MonitorFinding("bad_checkpoint", f"the checkpoint is malformed: {e}")]
        new = signed.checkpoint
        self._pending_witnessed = None
        findings = self._witness(signed.note, new)
        for trusted, what in ((self.state.note, "verified"), (self.state.witnessed, "witnessed")):
            old = MonitorState.checkpoint_of(trusted)
            if old is None:
                continue
            alert = self._compare(old, new, what)
            if alert is not None:
                return [alert, *findings]
        try:
            checked = self._read_new_entries(new)
        except (RootMismatchError, InputError) as e:
            return [MonitorFinding("bad_tile", f"the tiles do not match the signed checkpoint: {e}", new.size)]
        except (TransportError, StoreError) as e:
            return [MonitorFinding("unreachable", f"cannot fetch the tiles of size {new.size}: {e}", new.size)]
        findings.extend(checked)
        if new.size > (self._size(self.state.note) or 0):
            self.state.last_growth = self.clock()
        self.state.note = signed.note
        verified = MonitorFinding("verified", f"{new.origin} verified up to size {new.size}", new.size)
        return [*findings, verified]

    def _witness(self, note: str, new: Checkpoint) -> list[MonitorFinding]:
        if not self.witnesses:
            return []
        try:
            cosigned = verify_cosignatures(note, self.witnesses)
        except SignatureError as e:
            return [MonitorFinding("bad_cosignature", str(e), new.size)]
        if len(cosigned) < self.quorum:
            names = ", ".join(c.verifier.name for c in cosigned) or "none"
            message = f"size {new.size} carries {len(cosigned)} cosignatures of the given witnesses ({names})"
            return [MonitorFinding("witness_quorum", f"{message}; the policy needs {self.quorum}", new.size)]
        witnessed = MonitorState.checkpoint_of(self.state.witnessed)
        if witnessed is None or new.size >= witnessed.size:
            # kept only once consistency with it is checked below (a fork is compared before it is kept)
            self._pending_witnessed = note
        return []

    def _compare(self, old: Checkpoint, new: Checkpoint, what: str) -> MonitorFinding | None:
        """A rollback or fork alert if ``new`` does not extend ``old`` (verified, or cosigned by witnesses)."""
        if new.origin != old.origin:
            return MonitorFinding("fork", f"the log's origin changed from {old.origin!r} to {new.origin!r}", new.size)
        if new.size < old.size:
            return MonitorFinding(
                "rollback", f"the log shrank: size {new.size} served after size {old.size} was {what}", new.size
            )
        try:
            if new.size > old.size:
                self.client.root(new.size, expected=new.root_hash)  # tiles first: a bad tile is not a fork
        except (RootMismatchError, InputError) as e:
            return MonitorFinding("bad_tile", f"the tiles do not match the signed checkpoint: {e}", new.size)
        except (TransportError, StoreError) as e:
            return MonitorFinding("unreachable", f"cannot fetch the tiles of size {new.size}: {e}", new.size)
        try:
            self.client.consistency(old, new)  # tiles that hash to the new root: a failure is the log's
        except (InconsistencyError, ProofError, RootMismatchError, InputError) as e:
            message = f"the checkpoint of size {new.size} does not extend the {what} one: {e}"
            return MonitorFinding("fork", message, new.size)
        except (TransportError, StoreError) as e:
            return MonitorFinding("unreachable", f"cannot fetch the tiles of size {new.size}: {e}", new.size)
        return None

    def _read_new_entries(self, new: Checkpoint) -> list[MonitorFinding]:
        state = self.state
        begin = state.entries.next_index
        tree = CompactRange.from_hashes(0, begin, [bytes.fromhex(h) for h in state.tree])
        findings: list[MonitorFinding] = []
        follower = EntryFollower.from_json(
            state.entries.to_json(), verdicts=state.entries.verdicts, policy=state.entries.policy
        )
        step = 4096
        for start in range(begin, new.size, step):
            leaves, bodies = self.client.leaf_range(start, min(start + step, new.size), new.size)
            tree.append_many(leaves)
            for offset, (leaf, body) in enumerate(zip(leaves, bodies, strict=True)):
                for p in follower.check(start + offset, body, leaf):
                    findings.append(MonitorFinding("bad_entry", f"{p.check}: {p.message}", new.size, p.index))
        if tree.root() != new.root_hash:
            raise RootMismatchError(f"the leaf tiles of the tree of size {new.size}", new.root_hash, tree.root())
        self.entries_checked += new.size - begin
        state.entries = follower
        state.tree = [h.hex() for h in tree.hashes]
        if self._pending_witnessed is not None:
            state.witnessed = self._pending_witnessed
        return findings


def is_alert(findings: list[MonitorFinding]) -> bool:
    """True if any finding is an alert."""
    return any(f.alert for f in findings)

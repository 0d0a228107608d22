"""The rules findings are raised under and their severities (``RuleSet``), and the ``Finding`` itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from lineage_ledger.core import lifecycle
from lineage_ledger.errors import InputError

__all__ = ["ALL_RULES", "DEFAULT_SEVERITY", "RULES", "SECOND_NS", "SEVERITIES", "Finding", "RuleSet", "Severity"]

SECOND_NS: Final = 1_000_000_000
"""One second in nanoseconds, the unit of every duration of a RuleSet."""

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = ("low", "medium", "high", "critical")

RULES: Final[dict[str, str]] = {
    "token.refresh_replay": "two different tokens refreshed or rotated from one parent within the replay window "
    "(a replayed or stolen refresh token)",
    "time.skew": "occurred_at is ahead of recorded_at by more than the skew tolerance, or behind it by more "
    "than the delay limit",
    "time.out_of_order": "occurred_at goes backwards within one subject by more than the skew tolerance",
    "producer.unknown": "an event from a producer that had no key in the keyring (or is not in the known "
    "producer set) when it was recorded",
    "producer.heartbeat_gap": "no entry from a producer for longer than its heartbeat gap",
    "token.refresh_storm": "more refreshes and rotations in one token family within the storm window than "
    "the storm threshold",
    "session.ip_jump": "one token family used from two networks (a different /16 for IPv4, /48 for IPv6) "
    "within the session window",
    "token.use_after_ancestor_revoke": "a step on a token after a token it was refreshed, rotated or exchanged "
    "from (at any distance) was revoked: RFC 7009 section 2.1 ends the whole grant",
}
"""The anomaly rules this module adds to the lifecycle rules (core.lifecycle.RULES)."""

ALL_RULES: Final[dict[str, str]] = {**lifecycle.RULES, **RULES}
"""Every rule id a finding can carry, with what it means."""

DEFAULT_SEVERITY: Final[dict[str, Severity]] = {
    "token.use_without_issue": "high",
    "token.reissued": "high",
    "token.use_after_revoke": "critical",
    "token.use_after_expiry": "high",
    "token.use_after_rotation": "high",
    "token.activation_window": "medium",
    "token.activation_without_mfa": "high",
    "token.activation_state": "medium",
    "token.orphan_child": "medium",
    "token.parent_unknown": "high",
    "token.refresh_after_rotation": "critical",
    "token.parent_revoked": "high",
    "token.parent_expired": "medium",
    "token.refresh_replay": "critical",
    "time.skew": "low",
    "time.out_of_order": "medium",
    "producer.unknown": "high",
    "producer.heartbeat_gap": "medium",
    "token.refresh_storm": "medium",
    "session.ip_jump": "high",
    "token.use_after_ancestor_revoke": "critical",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly: which rule, how bad, about which subject, resting on which log entries."""

    rule: str
    severity: Severity
    subject: str
    """``token:<id>``, ``asset:<id>``, ``policy:<id>`` or ``producer:<id>``."""
    indices: tuple[int, ...]
    """Log indices of the entries involved, ascending (each can be proven with Lineage.proofs)."""
    message: str
    detected_at: str
    """The ledger's HLC reading when the finding became knowable (recorded_at of the entry that raised it)."""

    def to_json(self) -> dict[str, Any]:
        """A plain dict (canonical_bytes of it is the JSON-lines form)."""
        return {
            "detected_at": self.detected_at,
            "indices": list(self.indices),
            "message": self.message,
            "rule": self.rule,
            "severity": self.severity,
            "subject": self.subject,
        }


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Thresholds of the anomaly rules. Durations are nanoseconds; ``None`` switches a check off."""

    skew_tolerance_ns: int = 60 * SECOND_NS
    """occurred_at may be this far ahead of recorded_at, and go this far backwards within a subject."""
    max_delay_ns: int | None = 24 * 3600 * SECOND_NS
    """occurred_at may be this far behind recorded_at (late delivery); ORIGIN backfills are exempt."""
    refresh_replay_window_ns: int = 10 * 60 * SECOND_NS
    """Two children of one parent refreshed within this window are a replay."""
    refresh_storm_count: int = 10
    refresh_storm_window_ns: int = 10 * 60 * SECOND_NS
    """``refresh_storm_count`` refreshes or rotations in one family within this window are a storm."""
    ip_jump_window_ns: int = 3600 * SECOND_NS
    """Two uses of one family from different networks within this window are a jump."""
    ipv4_prefix: int = 16
    ipv6_prefix: int = 48
    heartbeat_gap_ns: Mapping[str, int] = field(default_factory=dict)
    """Per producer: the longest silence (by the ledger's clock) that is not a gap. Producers named here
    are expected from the first entry the engine sees on."""
    default_heartbeat_gap_ns: int | None = None
    """The gap for every other producer, from its first event on (None: only the producers named above)."""
    known_producers: frozenset[str] | None = None
    """If set, the only producers that are not unknown; otherwise a producer is known once a key of it is
    registered in the log (or handed to the engine)."""
    disabled: frozenset[str] = frozenset()
    """Rule ids that raise no finding."""
    severity: Mapping[str, Severity] = field(default_factory=dict)
    """Overrides of DEFAULT_SEVERITY by rule id."""
    cache_size: int = 100_000
    """Subjects, sessions and parents whose state stays in memory (each an LRU of this size)."""

    def __post_init__(self) -> None:
        if self.refresh_storm_count < 2:
            raise InputError("refresh_storm_count", "must be at least 2")
        if self.cache_size < 1:
            raise InputError("cache_size", "must be at least 1")
        for name in ("skew_tolerance_ns", "refresh_replay_window_ns", "refresh_storm_window_ns", "ip_jump_window_ns"):
            if getattr(self, name) < 0:
                raise InputError(name, "must not be negative")
        for producer, gap in self.heartbeat_gap_ns.items():
            if gap <= 0:
                raise InputError(f"heartbeat_gap_ns.{producer}", "must be positive")
        for rule, level in self.severity.items():
            if level not in SEVERITIES:
                raise InputError(f"severity.{rule}", f"must be one of {', '.join(SEVERITIES)}")

    def severity_of(self, rule: str) -> Severity:
        """The severity a finding of ``rule`` carries (unknown future verdict ids are "medium")."""
        return self.severity.get(rule) or DEFAULT_SEVERITY.get(rule, "medium")

    def heartbeat_gap(self, producer: str) -> int | None:
        """The heartbeat gap of ``producer``, or None if its silence is never a finding."""
        return self.heartbeat_gap_ns.get(producer, self.default_heartbeat_gap_ns)

"""The derived rows of the entries after a cut (verification.since), looked up by what those entries name
rather than read whole: their lineage links, the subject index rows of the tokens they touch, and the
envelope rows they name. Each check costs in proportion to the new entries (and to the rows the store
holds under the same keys in the same time span)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import msgspec

from lineage_ledger.errors import NotFoundError
from lineage_ledger.ledger.links import Link
from lineage_ledger.ledger.verification.entries import LEAN, LeanEventEntry
from lineage_ledger.ledger.verification.report import MAX_PROBLEMS, Problem

__all__ = ["envelope_row_problems", "link_problems", "subject_row_problems"]


def link_problems(store: Any, derived: Iterable[Link], start: int, below: int, size: int) -> list[Problem]:
    """The stored links under every (kind, key) the new entries' links name, in the span of times they
    give: each derived link of an entry below ``below`` (where the writer has stored every link) must be
    stored, and each stored link of an entry in [start, size) must be one the entries give."""
    by_key: dict[tuple[str, str], set[tuple[str, int, str]]] = defaultdict(set)
    for kind, key, at, idx, subject in derived:
        by_key[(kind, key)].add((at, idx, subject))
    problems: list[Problem] = []
    for (kind, key), mine in by_key.items():
        times = [at for at, _, _ in mine]
        stored = {
            (at, idx, subject)
            for at, idx, subject in store.links(kind, key, min(times), max(times) + "\x00")
            if start <= idx < size
        }
        for _at, idx, _subject in sorted(mine - stored, key=lambda link: link[1]):
            if idx < below and len(problems) < MAX_PROBLEMS:
                problems.append(Problem("links", f"entry {idx}: its {kind} link to {key!r} is not stored", idx))
        for _at, idx, _subject in sorted(stored - mine, key=lambda link: link[1]):
            if len(problems) < MAX_PROBLEMS:
                problems.append(
                    Problem("links", f"a stored {kind} link of entry {idx} is not one the entry gives (forged)", idx)
                )
    return problems


def subject_row_problems(
    returned: dict[str, list[int]], derived: Iterable[tuple[str, int]], size: int
) -> list[Problem]:
    """For each token subject the store was asked for (``returned``: the indices at or after the cut its
    subject lookup gave), those indices against the new entries of that subject (``derived``: (subject,
    index) of every entry from the cut on)."""
    mine: dict[str, set[int]] = defaultdict(set)
    for subject, idx in derived:
        if subject in returned:
            mine[subject].add(idx)
    problems: list[Problem] = []
    for subject, indices in returned.items():
        theirs = {i for i in indices if i < size}
        if theirs != mine[subject] and len(problems) < MAX_PROBLEMS:
            missing = sorted(mine[subject] - theirs)
            extra = sorted(theirs - mine[subject])
            at = min(missing + extra)
            problems.append(
                Problem(
                    "subject_index",
                    f"{subject}: the store's subject lookup misses entries {missing[:5]} and adds {extra[:5]}",
                    at,
                )
            )
    return problems


def envelope_row_problems(store: Any, first_uses: dict[bytes, int], start: int) -> list[Problem]:
    """Each envelope the new entries name: stored, and its first index the first entry naming it, or an
    entry before the cut that names it too (whether that one was the first is the full verification's)."""
    problems: list[Problem] = []
    earlier: dict[int, tuple[bytes, int]] = {}
    for digest, first in first_uses.items():
        try:
            row = store.envelope(digest)
        except NotFoundError:
            continue  # the entry checks reported it missing
        said = row.first_index
        if type(said) is int and 0 <= said < start:
            earlier[said] = (digest, first)
        elif said != first:
            problems.append(_first_problem(digest, said, first))
    named = {row.index: _envelope_named(row.body) for row in store.entries_at(list(earlier))}
    for said, (digest, first) in earlier.items():
        if named.get(said) != digest.hex():
            problems.append(_first_problem(digest, said, first))
    return problems[:MAX_PROBLEMS]


def _first_problem(digest: bytes, said: object, first: int) -> Problem:
    return Problem("envelope", f"envelope {digest.hex()[:16]}: its row says first entry {said}, not {first}", first)


def _envelope_named(body: bytes) -> str | None:
    try:
        entry = LEAN.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return entry.envelope if type(entry) is LeanEventEntry else None

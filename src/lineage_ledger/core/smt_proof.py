"""Reading the subject map and proving what it holds: ``lookup``, ``prove`` and ``verify`` of a ``MapProof``
(membership with the subject's chain head, or non-membership). Every node read is checked against the hash
its parent names; nothing here does I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lineage_ledger.core.smt_nodes import (
    EMPTY,
    HASH_SIZE,
    HEX_PATTERN,
    INTERIOR_PREFIX,
    KEY_BITS,
    TOP_BIT,
    Leaf,
    NodeReader,
    SubjectHead,
    check_hash,
    check_head,
    check_leaf_position,
    fetch,
    key_int,
)
from lineage_ledger.errors import InputError, ProofError, RootMismatchError

__all__ = ["MapProof", "lookup", "prove", "verify"]

_sha256 = hashlib.sha256


def _descend(root: bytes, key: bytes, read: NodeReader) -> tuple[list[bytes], Leaf | None]:
    """Follow ``key``'s path from ``root``; return the siblings passed and the leaf at the end, if any."""
    check_hash(root, "root")
    check_hash(key, "key")
    path = key_int(key)
    siblings: list[bytes] = []
    node_hash = root
    depth = 0
    while node_hash != EMPTY:
        node = fetch(read, node_hash, depth)
        if isinstance(node, Leaf):
            check_leaf_position(node, path, depth)
            return siblings, node
        if depth >= KEY_BITS:
            raise ProofError(f"the store holds an interior node at depth {depth}, below the deepest key bit")
        if (path >> (TOP_BIT - depth)) & 1:
            siblings.append(node.left)
            node_hash = node.right
        else:
            siblings.append(node.right)
            node_hash = node.left
        depth += 1
    return siblings, None


def lookup(root: bytes, key: bytes, read: NodeReader) -> SubjectHead | None:
    """Return the value of ``key`` in the map with ``root``, or None when the key is absent.

    Every node read is checked against its parent's hash, so the answer is the one ``root`` commits to,
    and the one ``prove`` would prove. Raises InputError for a root or key that is not 32 bytes;
    NotFoundError, RootMismatchError or ProofError as ``update`` does.
    """
    _, leaf = _descend(root, key, read)
    if leaf is not None and leaf.key == key:
        return leaf.value
    return None


def _check_proof(proof: MapProof) -> None:
    if not isinstance(proof.key, bytes) or len(proof.key) != HASH_SIZE:
        raise ProofError(f"the proof's key must be {HASH_SIZE} bytes")
    if not isinstance(proof.siblings, tuple):
        raise ProofError("the proof's siblings must be a tuple")
    if len(proof.siblings) > KEY_BITS:
        raise ProofError(f"the proof has {len(proof.siblings)} siblings; a path has at most {KEY_BITS}")
    for position, sibling in enumerate(proof.siblings):
        if not isinstance(sibling, bytes) or len(sibling) != HASH_SIZE:
            raise ProofError(f"sibling {position} of the proof is not {HASH_SIZE} bytes")
    if proof.terminal is not None:
        if not isinstance(proof.terminal, Leaf):
            raise ProofError("the proof's terminal must be a Leaf or None")
        try:
            check_hash(proof.terminal.key, "terminal.key")
            check_head(proof.terminal.value, "terminal.value")
        except InputError as e:
            raise ProofError(f"the proof's terminal leaf is malformed: {e}") from e


@dataclass(frozen=True, slots=True)
class MapProof:
    """The path of ``key`` from a root: the sibling hashes from the root downwards, and ``terminal``, the
    node where the path ends: the key's own leaf (membership), or another key's leaf or None for an empty
    subtree (non-membership).

    Construction checks the shape (a 32-byte key, at most 256 siblings of 32 bytes each, a well-formed
    terminal leaf) and raises ProofError; only ``verify`` says whether the proof is true.
    """

    key: bytes
    siblings: tuple[bytes, ...]
    terminal: Leaf | None

    def __post_init__(self) -> None:
        _check_proof(self)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for evidence bundles: hashes as lowercase hex, integers as JSON integers::

        {"key": hex, "siblings": [hex, ...],
         "terminal": null | {"key": hex, "head": hex, "count": int, "index": int}}
        """
        terminal = self.terminal
        return {
            "key": self.key.hex(),
            "siblings": [sibling.hex() for sibling in self.siblings],
            "terminal": None
            if terminal is None
            else {
                "key": terminal.key.hex(),
                "head": terminal.value.head.hex(),
                "count": terminal.value.count,
                "index": terminal.value.index,
            },
        }

    @classmethod
    def from_json(cls, data: object) -> MapProof:
        """Parse what ``to_json`` produces (as decoded by a JSON parser); the inverse of ``to_json``.

        Strict: exactly the fields ``to_json`` writes, lowercase hex, integers that are not booleans.
        Raises ProofError for anything else.
        """
        fields = _json_object(data, "proof", {"key", "siblings", "terminal"})
        siblings = fields["siblings"]
        if not isinstance(siblings, list):
            raise ProofError("proof.siblings must be a list")
        if len(siblings) > KEY_BITS:
            raise ProofError(f"the proof has {len(siblings)} siblings; a path has at most {KEY_BITS}")
        raw = fields["terminal"]
        terminal = None
        if raw is not None:
            leaf = _json_object(raw, "proof.terminal", {"key", "head", "count", "index"})
            for name in ("count", "index"):
                if isinstance(leaf[name], bool) or not isinstance(leaf[name], int):
                    raise ProofError(f"proof.terminal.{name} must be an integer")
            head = _json_hash(leaf["head"], "proof.terminal.head")
            leaf_key = _json_hash(leaf["key"], "proof.terminal.key")
            try:
                terminal = Leaf(leaf_key, SubjectHead(head, leaf["count"], leaf["index"]))
            except InputError as e:
                raise ProofError(f"proof.terminal is malformed: {e}") from e
        return cls(
            _json_hash(fields["key"], "proof.key"),
            tuple(_json_hash(sibling, f"proof.siblings[{i}]") for i, sibling in enumerate(siblings)),
            terminal,
        )


def _json_object(data: object, field: str, names: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProofError(f"{field} must be a JSON object")
    if set(data) != names:
        raise ProofError(f"{field} must have exactly the fields {sorted(names)}, got {sorted(map(str, data))}")
    return data


def _json_hash(text: object, field: str) -> bytes:
    if not isinstance(text, str) or not HEX_PATTERN.match(text):
        raise ProofError(f"{field} must be {2 * HASH_SIZE} lowercase hex digits")
    return bytes.fromhex(text)


def prove(root: bytes, key: bytes, read: NodeReader) -> MapProof:
    """Return the proof of what ``key`` maps to under ``root``: its value if present, its absence if not.

    The proof ``verify`` accepts for ``lookup(root, key, read)``; it holds one sibling per interior node on
    the key's path. Raises as ``lookup`` does.
    """
    siblings, leaf = _descend(root, key, read)
    return MapProof(key, tuple(siblings), leaf)


def verify(root: bytes, key: bytes, value: SubjectHead | None, proof: MapProof) -> None:
    """Return only if ``proof`` shows that, in the map with ``root``, ``key`` maps to ``value`` (None: the key
    is absent).

    Raises ProofError when the proof is malformed, is for another key, or shows something else: another
    value, a present key claimed absent, an absent key (an empty subtree or another key's leaf) claimed
    present; when its terminal leaf's key leaves the path its siblings trace; or when it is not the
    canonical proof (its last sibling is ``EMPTY``, so its terminal would have been a shortcut one level
    up). Raises RootMismatchError (expected, calculated) when the siblings do not lead to ``root``.
    """
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise ProofError(f"the root must be {HASH_SIZE} bytes")
    if not isinstance(proof, MapProof):
        raise ProofError(f"the proof must be a MapProof, got {type(proof).__name__}")
    _check_proof(proof)  # again: a frozen dataclass can still be forced
    if proof.key != key:
        raise ProofError("the proof is for another key")
    if value is not None:
        try:
            check_head(value, "value")
        except InputError as e:
            raise ProofError(f"the claimed value is malformed: {e}") from e
    siblings = proof.siblings
    depth = len(siblings)
    path = key_int(key)
    terminal = proof.terminal
    if terminal is None:
        if value is not None:
            raise ProofError("the proof ends in an empty subtree: the key is absent, not present")
        node_hash = EMPTY
    else:
        check_leaf_position(terminal, path, depth)
        if terminal.key == key:
            if value is None:
                raise ProofError("the proof ends at the key's own leaf: the key is present, not absent")
            if terminal.value != value:
                raise ProofError("the proof shows another value for the key")
        elif value is not None:
            raise ProofError("the proof ends at another key's leaf: the key is absent, not present")
        node_hash = terminal.node_hash()
    if depth and siblings[-1] == EMPTY:
        raise ProofError("the proof's last sibling is empty, so its terminal is not where the tree keeps it")
    sha = _sha256
    prefix = INTERIOR_PREFIX
    for depth_above in range(depth - 1, -1, -1):
        sibling = siblings[depth_above]
        if (path >> (TOP_BIT - depth_above)) & 1:
            node_hash = sha(prefix + sibling + node_hash).digest()
        else:
            node_hash = sha(prefix + node_hash + sibling).digest()
    if node_hash != root:
        raise RootMismatchError("the map proof does not lead to the root", root, node_hash)

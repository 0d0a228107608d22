"""Tests for lineage_ledger.core.smt.

A naive reference written straight from the definition (recursive over sorted keys) pins the roots; property
tests check that batched, persistent updates agree with it, that every historical root stays provable, that
``update`` returns exactly the nodes the new tree adds, and that every kind of tampering is caught, both in
proofs (``verify``) and in the store (``lookup``, ``prove``, ``update``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage_ledger.core.smt import (
    EMPTY,
    KEY_BITS,
    Interior,
    Leaf,
    MapProof,
    Node,
    SubjectHead,
    interior_hash,
    key_of,
    leaf_node_hash,
    lookup,
    prove,
    root_of,
    update,
    verify,
)
from lineage_ledger.errors import (
    InputError,
    NotFoundError,
    ProofError,
    RootMismatchError,
    StoreError,
    VerificationError,
)

MAX_SAFE = 2**53 - 1

# Naive reference, straight from the definition -----------------------------------------------------------


def ref_value_hash(value: SubjectHead) -> bytes:
    return hashlib.sha256(value.head + value.count.to_bytes(8, "big") + value.index.to_bytes(8, "big")).digest()


def ref_bit(key: bytes, depth: int) -> int:
    return (key[depth // 8] >> (7 - depth % 8)) & 1


def ref_root(items: Mapping[bytes, SubjectHead], depth: int = 0) -> bytes:
    """0 keys: 32 zero bytes; 1 key: its leaf node hash; else the interior over the halves split at bit depth."""
    keys = sorted(items)
    if not keys:
        return bytes(32)
    if len(keys) == 1:
        key = keys[0]
        return hashlib.sha256(b"\x10" + key + ref_value_hash(items[key])).digest()
    left = {k: items[k] for k in keys if ref_bit(k, depth) == 0}
    right = {k: items[k] for k in keys if ref_bit(k, depth) == 1}
    return hashlib.sha256(b"\x11" + ref_root(left, depth + 1) + ref_root(right, depth + 1)).digest()


# A dict-backed store that records its reads ---------------------------------------------------------------


class Store:
    """Content-addressed nodes in a dict; ``read`` is the NodeReader and logs every hash asked for."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, Node] = {}
        self.reads: list[bytes] = []

    def read(self, node_hash: bytes) -> Node:
        self.reads.append(node_hash)
        return self.nodes[node_hash]

    def put(self, created: Mapping[bytes, Node]) -> None:
        for node_hash, node in created.items():
            assert node.node_hash() == node_hash
            # Content addressing: a hash already stored must hold the same node.
            assert self.nodes.get(node_hash, node) == node
            self.nodes[node_hash] = node

    def apply(self, root: bytes, changes: Mapping[bytes, SubjectHead]) -> tuple[bytes, dict[bytes, Node]]:
        new_root, created = update(root, changes, self.read)
        self.put(created)
        return new_root, created

    def reachable(self, root: bytes) -> set[bytes]:
        seen: set[bytes] = set()
        todo = [root]
        while todo:
            node_hash = todo.pop()
            if node_hash == EMPTY or node_hash in seen:
                continue
            seen.add(node_hash)
            node = self.nodes[node_hash]
            if isinstance(node, Interior):
                todo += [node.left, node.right]
        return seen

    def path(self, root: bytes, key: bytes) -> list[bytes]:
        """Hashes of the stored nodes on ``key``'s path, root first."""
        hashes = []
        node_hash, depth = root, 0
        while node_hash != EMPTY:
            hashes.append(node_hash)
            node = self.nodes[node_hash]
            if isinstance(node, Leaf):
                break
            node_hash = node.right if ref_bit(key, depth) else node.left
            depth += 1
        return hashes


def build(items: Mapping[bytes, SubjectHead]) -> tuple[Store, bytes]:
    store = Store()
    root, _ = store.apply(EMPTY, items)
    return store, root


# Strategies ------------------------------------------------------------------------------------------------

_BASE = int.from_bytes(key_of("base"), "big")

keys_st = st.one_of(
    st.binary(min_size=32, max_size=32),
    # Keys sharing 248 leading bits, and keys one bit away from a common key: long shared prefixes, so
    # interior chains and leaves at depths up to 256.
    st.integers(0, 255).map(lambda low: (_BASE ^ low).to_bytes(32, "big")),
    st.integers(0, 255).map(lambda bit: (_BASE ^ (1 << bit)).to_bytes(32, "big")),
)


@st.composite
def heads_st(draw: st.DrawFn) -> SubjectHead:
    count = draw(st.integers(1, MAX_SAFE))
    index = draw(st.integers(count - 1, MAX_SAFE))
    return SubjectHead(draw(st.binary(min_size=32, max_size=32)), count, index)


maps_st = st.dictionaries(keys_st, heads_st(), max_size=40)
batches_st = st.lists(st.dictionaries(keys_st, heads_st(), max_size=15), min_size=1, max_size=6)


def head(seed: int, count: int = 1, index: int | None = None) -> SubjectHead:
    return SubjectHead(hashlib.sha256(seed.to_bytes(8, "big")).digest(), count, count - 1 if index is None else index)


def key_n(n: int) -> bytes:
    return key_of(f"token:{n:04x}")


# Hashing and golden vectors --------------------------------------------------------------------------------


def test_hashes_follow_the_definition() -> None:
    assert bytes(32) == EMPTY
    assert key_of("token:ab") == hashlib.sha256(b"token:ab").digest()
    key, value_hash = bytes(range(32)), bytes(range(32, 64))
    assert leaf_node_hash(key, value_hash) == hashlib.sha256(b"\x10" + key + value_hash).digest()
    assert interior_hash(key, value_hash) == hashlib.sha256(b"\x11" + key + value_hash).digest()
    value = SubjectHead(bytes(range(32)), 3, 7)
    assert (
        value.value_hash()
        == hashlib.sha256(
            bytes(range(32)) + b"\x00\x00\x00\x00\x00\x00\x00\x03" + b"\x00\x00\x00\x00\x00\x00\x00\x07"
        ).digest()
    )
    assert Leaf(key, value).node_hash() == leaf_node_hash(key, value.value_hash())
    assert Interior(key, value_hash).node_hash() == interior_hash(key, value_hash)


def test_golden_vectors() -> None:
    """Pin the bytes: a change here changes every checkpoint that commits to a map."""
    value = SubjectHead(bytes(range(32)), 3, 7)
    assert value.value_hash().hex() == "f26903c76a7c15ed40e0d4d52b9bd0e4c526650e15481fa8c4aea9a0f7e13980"
    assert key_of("token:00").hex() == "368f80f541526c8222085086f77f9390d8768699fab215ca3612208a12301aed"
    items = {key_of("token:00"): value, key_of("token:01"): SubjectHead(bytes(32), 1, 0)}
    assert root_of(items) == ref_root(items)
    assert root_of(items).hex() == "70d50367629dcb0eb67db5855d3e5b7fa239c34224ca9cda9e2f6aa068634199"
    assert root_of({}) == EMPTY
    assert root_of({key_of("token:00"): value}) == leaf_node_hash(key_of("token:00"), value.value_hash())


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: SubjectHead(bytes(31), 1, 0), "value.head"),
        (lambda: SubjectHead(bytearray(32), 1, 0), "value.head"),  # type: ignore[arg-type]
        (lambda: SubjectHead(bytes(32), 0, 0), "value.count"),
        (lambda: SubjectHead(bytes(32), True, 0), "value.count"),
        (lambda: SubjectHead(bytes(32), 2**53, 2**53), "value.count"),
        (lambda: SubjectHead(bytes(32), 3, 1), "value.index"),
        (lambda: SubjectHead(bytes(32), 1, 2**53), "value.index"),
        (lambda: Leaf(bytes(31), head(1)), "key"),
        (lambda: Leaf(bytes(32), (bytes(32), 1, 0)), "value"),  # type: ignore[arg-type]
        (lambda: Interior(bytes(32), b""), "right"),
        (lambda: leaf_node_hash(bytes(32), bytes(33)), "value_hash"),
        (lambda: interior_hash(bytes(1), bytes(32)), "left"),
        (lambda: key_of("\ud800"), "subject"),
        (lambda: key_of(b"token:00"), "subject"),  # type: ignore[arg-type]
        (lambda: root_of({bytes(31): head(1)}), "changes key"),
        (lambda: update(bytes(31), {}, Store().read), "root"),
    ],
)
def test_malformed_input_is_rejected(call: Callable[[], object], field: str) -> None:
    with pytest.raises(InputError) as raised:
        call()
    assert raised.value.field == field


def test_update_checks_every_change_before_reading() -> None:
    store, root = build({key_n(1): head(1)})
    store.reads.clear()
    forced = head(2)
    object.__setattr__(forced, "count", 0)
    with pytest.raises(InputError):
        update(root, {key_n(2): head(2), key_n(3): forced}, store.read)
    assert store.reads == []


# Roots and batches ----------------------------------------------------------------------------------------


@given(maps_st)
def test_root_of_matches_reference(items: dict[bytes, SubjectHead]) -> None:
    assert root_of(items) == ref_root(items)


@settings(deadline=None)
@given(batches_st)
def test_batches_agree_and_return_exactly_the_new_nodes(batches: list[dict[bytes, SubjectHead]]) -> None:
    store = Store()
    root = EMPTY
    merged: dict[bytes, SubjectHead] = {}
    for batch in batches:
        old_nodes = store.reachable(root)
        store.reads.clear()
        new_root, created = store.apply(root, batch)
        merged.update(batch)
        assert new_root == ref_root(merged)
        # Exactly the nodes of the new tree that the old tree lacks: no unchanged node is returned again.
        assert set(created) == store.reachable(new_root) - old_nodes
        # Each old node on a changed path is read once; nothing off those paths is read.
        assert len(store.reads) == len(set(store.reads))
        assert set(store.reads) <= old_nodes
        root = new_root
    one_batch, created = update(EMPTY, merged, Store().read)
    assert one_batch == root == root_of(merged) == ref_root(merged)
    assert set(created) == store.reachable(root)


@given(maps_st)
def test_rewriting_the_same_values_changes_nothing(items: dict[bytes, SubjectHead]) -> None:
    store, root = build(items)
    assert update(root, items, store.read) == (root, {})
    assert update(root, {}, store.read) == (root, {})


@settings(deadline=None)
@given(batches_st, st.lists(keys_st, max_size=5))
def test_historical_roots_stay_provable(batches: list[dict[bytes, SubjectHead]], extra: list[bytes]) -> None:
    store = Store()
    history: list[tuple[bytes, dict[bytes, SubjectHead]]] = []
    root = EMPTY
    merged: dict[bytes, SubjectHead] = {}
    for batch in batches:
        root, _ = store.apply(root, batch)
        merged = {**merged, **batch}
        history.append((root, merged))
    every_key = set(merged) | set(extra)
    for old_root, contents in history:
        for key in every_key:
            expected = contents.get(key)
            assert lookup(old_root, key, store.read) == expected
            verify(old_root, key, expected, prove(old_root, key, store.read))


def test_update_scales_with_the_changes_not_the_tree() -> None:
    items = {key_n(n): head(n) for n in range(3000)}
    store, root = build(items)
    changes = {key_n(n): head(n, 2) for n in range(0, 3000, 30)} | {key_n(n): head(n) for n in range(3000, 3050)}
    old_nodes = store.reachable(root)
    store.reads.clear()
    new_root, created = store.apply(root, changes)
    assert new_root == root_of(items | changes)
    assert set(created) == store.reachable(new_root) - old_nodes
    # Every node read sits where the new tree has a new node, and no node is read twice.
    assert len(store.reads) == len(set(store.reads)) <= len(created)
    # 150 changes in a tree of ~3000: far fewer than the ~6000 nodes of the whole tree.
    assert len(created) < 150 * 12


# Proofs ---------------------------------------------------------------------------------------------------


@given(maps_st, keys_st)
def test_prove_and_verify_round_trip(items: dict[bytes, SubjectHead], absent: bytes) -> None:
    store, root = build(items)
    for key, value in items.items():
        proof = prove(root, key, store.read)
        assert proof.terminal == Leaf(key, value)
        assert lookup(root, key, store.read) == value
        verify(root, key, value, proof)
    if absent not in items:
        proof = prove(root, absent, store.read)
        assert proof.terminal is None or proof.terminal.key != absent
        assert lookup(root, absent, store.read) is None
        verify(root, absent, None, proof)


def tampered_proofs(proof: MapProof, data: st.DataObject) -> Iterator[tuple[str, MapProof]]:
    """Every way of changing a proof that must be caught, whatever the map."""
    siblings = proof.siblings
    for i, sibling in enumerate(siblings):
        bit = data.draw(st.integers(0, 255), label=f"bit of sibling {i}")
        flipped = (int.from_bytes(sibling, "big") ^ (1 << bit)).to_bytes(32, "big")
        yield f"sibling {i} flipped", dataclasses.replace(proof, siblings=(*siblings[:i], flipped, *siblings[i + 1 :]))
    if siblings:
        yield "first sibling dropped", dataclasses.replace(proof, siblings=siblings[1:])
        yield "last sibling dropped", dataclasses.replace(proof, siblings=siblings[:-1])
    if len(siblings) < KEY_BITS:
        extra = data.draw(st.binary(min_size=32, max_size=32), label="extra sibling")
        yield "sibling appended", dataclasses.replace(proof, siblings=(*siblings, extra))
        yield "empty sibling appended", dataclasses.replace(proof, siblings=(*siblings, EMPTY))
        yield "sibling prepended", dataclasses.replace(proof, siblings=(extra, *siblings))
    terminal = proof.terminal
    if terminal is None:
        yield "leaf put at an empty end", dataclasses.replace(proof, terminal=Leaf(proof.key, head(7)))
    else:
        yield "terminal removed", dataclasses.replace(proof, terminal=None)
        value = terminal.value
        grows = value.index < MAX_SAFE and value.count < MAX_SAFE
        more = SubjectHead(value.head, value.count + 1, value.index + 1) if grows else head(8)
        yield "terminal value changed", dataclasses.replace(proof, terminal=Leaf(terminal.key, more))
        flipped_head = SubjectHead(bytes([value.head[0] ^ 1]) + value.head[1:], value.count, value.index)
        yield "terminal head changed", dataclasses.replace(proof, terminal=Leaf(terminal.key, flipped_head))
        bit = data.draw(st.integers(0, 255), label="bit of terminal key")
        other = (int.from_bytes(terminal.key, "big") ^ (1 << bit)).to_bytes(32, "big")
        yield "terminal key changed", dataclasses.replace(proof, terminal=Leaf(other, value))


@given(maps_st, keys_st, st.data())
def test_every_tampering_is_rejected(items: dict[bytes, SubjectHead], query: bytes, data: st.DataObject) -> None:
    store, root = build(items)
    use_present = bool(items) and data.draw(st.booleans(), label="query a present key")
    key = data.draw(st.sampled_from(sorted(items)), label="present key") if use_present else query
    truth = items.get(key)
    proof = prove(root, key, store.read)
    verify(root, key, truth, proof)
    for what, tampered in tampered_proofs(proof, data):
        try:
            verify(root, key, truth, tampered)
        except VerificationError:
            continue
        pytest.fail(f"accepted a proof with its {what}")
    # Wrong claims with the honest proof.
    with pytest.raises(ProofError):
        verify(root, key, head(99) if truth is None else None, proof)
    if truth is not None:
        other_count = truth.count + 1 if truth.count < MAX_SAFE else truth.count - 1  # still a valid head
        with pytest.raises(ProofError):
            verify(root, key, dataclasses.replace(truth, count=other_count, index=MAX_SAFE), proof)
    # The proof of one key does not verify for another.
    other = data.draw(keys_st.filter(lambda k: k != key), label="other key")
    with pytest.raises(ProofError):
        verify(root, other, items.get(other), proof)
    # Relabelled for another key, a proof is accepted only if what it then says is true: keys sharing
    # the path of an absent key are absent too, and nothing else passes.
    terminal_value = None if proof.terminal is None else proof.terminal.value
    claim = data.draw(st.sampled_from([None, items.get(other), terminal_value]))
    relabelled = dataclasses.replace(proof, key=other)
    try:
        verify(root, other, claim, relabelled)
    except VerificationError:
        return
    assert items.get(other) == claim


def test_another_keys_leaf_does_not_prove_membership() -> None:
    present, absent = key_n(1), key_n(2)
    store, root = build({present: head(1)})
    proof = prove(root, absent, store.read)
    assert proof == MapProof(absent, (), Leaf(present, head(1)))
    verify(root, absent, None, proof)
    with pytest.raises(ProofError, match="another key's leaf"):
        verify(root, absent, head(1), proof)
    with pytest.raises(ProofError, match="present, not absent"):
        verify(root, present, None, MapProof(present, (), Leaf(present, head(1))))


def with_bit0(bit: int, seed: int) -> bytes:
    """A key whose first bit is ``bit``."""
    n = 0
    while True:
        key = key_n(seed * 1000 + n)
        if key[0] >> 7 == bit:
            return key
        n += 1


def dishonest_store(nodes: list[Node]) -> Store:
    store = Store()
    store.nodes = {node.node_hash(): node for node in nodes}
    return store


def test_a_leaf_off_its_path_is_rejected() -> None:
    # A writer that breaks the rules puts two keys starting with 1 under the root's left (0) child.
    one_a, one_b, zero = with_bit0(1, 1), with_bit0(1, 2), with_bit0(0, 3)
    leaf_a, leaf_b = Leaf(one_a, head(1)), Leaf(one_b, head(2))
    top = Interior(leaf_a.node_hash(), leaf_b.node_hash())
    store = dishonest_store([leaf_a, leaf_b, top])
    root = top.node_hash()
    # The siblings hash to the root, but leaf_a's key does not share the path's first bit with zero's.
    forged = MapProof(zero, (leaf_b.node_hash(),), leaf_a)
    with pytest.raises(ProofError, match="not on this path"):
        verify(root, zero, None, forged)
    with pytest.raises(ProofError, match="not on this path"):
        lookup(root, zero, store.read)
    with pytest.raises(ProofError, match="not on this path"):
        prove(root, zero, store.read)
    with pytest.raises(ProofError, match="not on this path"):
        update(root, {zero: head(3)}, store.read)
    # Claimed for its own key, the leaf sits on the wrong side, so the siblings do not lead to the root.
    with pytest.raises(RootMismatchError):
        verify(root, one_a, head(1), MapProof(one_a, (leaf_b.node_hash(),), leaf_a))


def test_a_leaf_below_an_empty_sibling_is_rejected() -> None:
    key = with_bit0(0, 4)
    leaf = Leaf(key, head(1))
    top = Interior(leaf.node_hash(), EMPTY)
    # This hashes to the root of a tree no honest writer makes: the leaf belongs one level up.
    with pytest.raises(ProofError, match="last sibling is empty"):
        verify(top.node_hash(), key, head(1), MapProof(key, (EMPTY,), leaf))


def test_depth_beyond_256_is_rejected() -> None:
    key = bytes(32)
    with pytest.raises(ProofError, match="at most 256"):
        MapProof(key, (b"\x01" * 32,) * (KEY_BITS + 1), None)
    proof = MapProof(key, (b"\x01" * 32,) * KEY_BITS, None)
    object.__setattr__(proof, "siblings", (*proof.siblings, b"\x01" * 32))
    with pytest.raises(ProofError, match="at most 256"):
        verify(EMPTY, key, None, proof)
    # A chain of 257 interior nodes in the store.
    nodes: list[Node] = [Interior(EMPTY, b"\x01" * 32)]
    for _ in range(KEY_BITS):
        nodes.append(Interior(nodes[-1].node_hash(), b"\x01" * 32))
    store = dishonest_store(nodes)
    with pytest.raises(ProofError, match="depth 256"):
        lookup(nodes[-1].node_hash(), key, store.read)


def test_malformed_proofs_and_claims_are_rejected() -> None:
    store, root = build({key_n(1): head(1)})
    proof = prove(root, key_n(1), store.read)
    with pytest.raises(ProofError):
        MapProof(bytes(31), (), None)
    with pytest.raises(ProofError):
        MapProof(bytes(32), (bytes(31),), None)
    with pytest.raises(ProofError):
        MapProof(bytes(32), [bytes(32)], None)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        MapProof(bytes(32), (), Interior(EMPTY, EMPTY))  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        verify(root[:31], key_n(1), head(1), proof)
    with pytest.raises(ProofError):
        verify(root, key_n(1), head(1), proof.to_json())  # type: ignore[arg-type]
    forced = head(1)
    object.__setattr__(forced, "index", -1)
    with pytest.raises(ProofError):
        verify(root, key_n(1), forced, proof)


# The store is untrusted -----------------------------------------------------------------------------------


def tampered_node(node: Node) -> Node:
    if isinstance(node, Leaf):
        value = node.value
        index = value.index + 1 if value.index < MAX_SAFE else value.index - 1  # another valid head
        return Leaf(node.key, SubjectHead(value.head, value.count, index))
    if node.left != node.right:
        return Interior(node.right, node.left)
    return Interior(bytes([node.left[0] ^ 1]) + node.left[1:], node.right)


@given(st.dictionaries(keys_st, heads_st(), min_size=2, max_size=40), st.data())
def test_a_tampered_node_is_caught(items: dict[bytes, SubjectHead], data: st.DataObject) -> None:
    store, root = build(items)
    key = data.draw(st.sampled_from(sorted(items)))
    path = store.path(root, key)
    victim = data.draw(st.sampled_from(path))
    store.nodes[victim] = tampered_node(store.nodes[victim])
    with pytest.raises(RootMismatchError) as raised:
        lookup(root, key, store.read)
    assert raised.value.expected == victim
    with pytest.raises(RootMismatchError):
        prove(root, key, store.read)
    with pytest.raises(RootMismatchError):
        update(root, {key: head(5)}, store.read)


def test_missing_and_wrong_nodes_are_store_errors() -> None:
    store, root = build({key_n(n): head(n) for n in range(10)})
    del store.nodes[root]
    with pytest.raises(NotFoundError, match="not in the store"):
        lookup(root, key_n(1), store.read)

    def not_found(node_hash: bytes) -> Node:
        raise NotFoundError("gone")

    with pytest.raises(NotFoundError, match="gone"):
        update(root, {key_n(1): head(2)}, not_found)

    def wrong_type(node_hash: bytes) -> Node:
        return node_hash  # type: ignore[return-value]

    with pytest.raises(StoreError, match="returned a bytes"):
        prove(root, key_n(1), wrong_type)


# JSON ------------------------------------------------------------------------------------------------------


@given(maps_st, keys_st)
def test_json_round_trip(items: dict[bytes, SubjectHead], key: bytes) -> None:
    store, root = build(items)
    for query in [*list(items)[:3], key]:
        proof = prove(root, query, store.read)
        parsed = MapProof.from_json(json.loads(json.dumps(proof.to_json())))
        assert parsed == proof
        verify(root, query, items.get(query), parsed)


def _good_json() -> dict[str, Any]:
    store, root = build({key_n(n): head(n) for n in range(4)})
    proof = prove(root, key_n(1), store.read)
    assert proof.terminal is not None
    assert proof.siblings
    return proof.to_json()


def _edit(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    data = _good_json()
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    "data",
    [
        [],
        _edit(("key",), "AB" * 32),
        _edit(("key",), "ab" * 31),
        _edit(("key",), _DELETE),
        _edit(("extra",), 1),
        _edit(("siblings",), "00" * 32),
        _edit(("siblings", 0), 0),
        _edit(("siblings",), ["00" * 32] * 257),
        _edit(("terminal",), "leaf"),
        _edit(("terminal", "count"), True),
        _edit(("terminal", "count"), 0),
        _edit(("terminal", "count"), "1"),
        _edit(("terminal", "index"), 2**53),
        _edit(("terminal", "head"), "00" * 31),
        _edit(("terminal", "key"), None),
        _edit(("terminal", "unknown"), 1),
    ],
)
def test_malformed_json_is_rejected(data: Any) -> None:
    with pytest.raises(ProofError):
        MapProof.from_json(data)

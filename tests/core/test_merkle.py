"""Tests for lineage_ledger.core.merkle.

Three independent checks: the transparency-dev/merkle JSON proof vectors, the RFC 6962 example tree's
published roots, and hypothesis properties against a naive reference written from RFC 9162 section 2.1.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lineage_ledger.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    NodeGetter,
    TiledNodeReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_root,
    root_from_inclusion,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from lineage_ledger.errors import (
    InconsistencyError,
    LedgerError,
    ProofError,
    RootMismatchError,
    StoreError,
    VerificationError,
)

# Naive reference, straight from RFC 9162 section 2.1 -------------------------------------------------------


def ref_mth(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) as RFC 9162 2.1.1 defines it, over raw entries."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:])).digest()


def ref_path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1."""
    n = len(entries)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, entries[:k]), ref_mth(entries[k:])]
    return [*ref_path(m - k, entries[k:]), ref_mth(entries[:k])]


def ref_subproof(m: int, entries: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 2.1.4.1."""
    n = len(entries)
    if m == n:
        return [] if b else [ref_mth(entries)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, entries[:k], b), ref_mth(entries[k:])]
    return [*ref_subproof(m - k, entries[k:], False), ref_mth(entries[:k])]


def ref_proof(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1."""
    return ref_subproof(m, entries, True)


def ref_getter(entries: Sequence[bytes]) -> NodeGetter:
    """A NodeGetter that recomputes each node with ref_mth and refuses nodes that are not perfect."""

    def node(level: int, index: int) -> bytes:
        width = 1 << level
        covered = entries[index * width : (index + 1) * width]
        assert len(covered) == width, f"asked for node ({level}, {index}) beyond {len(entries)} leaves"
        return ref_mth(covered)

    return node


def make_entries(size: int, salt: bytes = b"") -> list[bytes]:
    """Distinct entries, so no two leaves share a hash."""
    return [salt + i.to_bytes(4, "big") for i in range(size)]


def flip_bit(proof: Sequence[bytes], position: int, bit: int) -> list[bytes]:
    tampered = list(proof)
    value = bytearray(tampered[position])
    value[bit // 8] ^= 1 << (bit % 8)
    tampered[position] = bytes(value)
    return tampered


# transparency-dev/merkle proof vectors --------------------------------------------------------------------

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
PROOF_VECTORS = VECTORS / "rfc6962-transparency-dev-merkle" / "testdata"


def vector_files(kind: str) -> list[Path]:
    files = sorted((PROOF_VECTORS / kind).rglob("*.json"))
    # An empty parameter list would make pytest skip; a missing file makes the case fail instead.
    return files or [PROOF_VECTORS / kind / "MISSING.json"]


def vector_id(path: Path) -> str:
    return path.relative_to(PROOF_VECTORS).as_posix()


def load_vector(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def b64(value: str | None) -> bytes:
    return base64.b64decode(value or "", validate=True)


def b64_list(values: list[str] | None) -> list[bytes]:
    return [b64(value) for value in values or []]


# The RFC 6962 example tree used by transparency-dev/merkle (proof/verify_test.go and cmd/proofgen/main.go:
# `leaves` and `roots`, the latter MTH of the first n leaves for n = 1..8).
EXAMPLE_ENTRIES = [
    bytes.fromhex(""),
    bytes.fromhex("00"),
    bytes.fromhex("10"),
    bytes.fromhex("2021"),
    bytes.fromhex("3031"),
    bytes.fromhex("40414243"),
    bytes.fromhex("5051525354555657"),
    bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
]
EXAMPLE_ROOTS = [
    bytes.fromhex("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    bytes.fromhex("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    bytes.fromhex("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    bytes.fromhex("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    bytes.fromhex("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    bytes.fromhex("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    bytes.fromhex("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# Also pinned by transparency-dev/merkle (sha256EmptyTreeHash in proof/verify_test.go).
SHA256_EMPTY_TREE_HASH = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_vectors_are_present() -> None:
    assert PROOF_VECTORS.is_dir(), f"missing test vectors at {PROOF_VECTORS}"
    assert len(list((PROOF_VECTORS / "inclusion").rglob("*.json"))) == 98
    assert len(list((PROOF_VECTORS / "consistency").rglob("*.json"))) == 98


@pytest.mark.parametrize("path", vector_files("inclusion"), ids=vector_id)
def test_inclusion_vector(path: Path) -> None:
    vector = load_vector(path)
    leaf, root, proof = b64(vector["leafHash"]), b64(vector["root"]), b64_list(vector["proof"])
    index, size = vector["leafIdx"], vector["treeSize"]
    if vector["wantErr"]:
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, proof, root)
        return
    verify_inclusion(leaf, index, size, proof, root)
    assert root_from_inclusion(leaf, index, size, proof) == root


@pytest.mark.parametrize("path", vector_files("consistency"), ids=vector_id)
def test_consistency_vector(path: Path) -> None:
    vector = load_vector(path)
    old_root, new_root, proof = b64(vector["root1"]), b64(vector["root2"]), b64_list(vector["proof"])
    old_size, new_size = vector["size1"], vector["size2"]
    if vector["wantErr"]:
        with pytest.raises(VerificationError):
            verify_consistency(old_size, new_size, old_root, new_root, proof)
        return
    verify_consistency(old_size, new_size, old_root, new_root, proof)


def happy_paths(kind: str) -> list[Path]:
    files = sorted((PROOF_VECTORS / kind).glob("[0-9]*/happy-path.json"))
    return files or [PROOF_VECTORS / kind / "MISSING.json"]


@pytest.mark.parametrize("path", happy_paths("inclusion"), ids=vector_id)
def test_inclusion_proof_reproduces_vector(path: Path) -> None:
    vector = load_vector(path)
    index, size = vector["leafIdx"], vector["treeSize"]
    entries = EXAMPLE_ENTRIES[:size]
    assert leaf_hash(entries[index]) == b64(vector["leafHash"])
    assert root_of([leaf_hash(entry) for entry in entries]) == b64(vector["root"])
    assert inclusion_proof(index, size, ref_getter(entries)) == b64_list(vector["proof"])


@pytest.mark.parametrize("path", happy_paths("consistency"), ids=vector_id)
def test_consistency_proof_reproduces_vector(path: Path) -> None:
    vector = load_vector(path)
    old_size, new_size = vector["size1"], vector["size2"]
    entries = EXAMPLE_ENTRIES[:new_size]
    assert consistency_proof(old_size, new_size, ref_getter(entries)) == b64_list(vector["proof"])


# Hashing and the RFC 6962 example tree -------------------------------------------------------------------


def test_hash_prefixes() -> None:
    assert EMPTY_ROOT == SHA256_EMPTY_TREE_HASH
    assert HASH_SIZE == len(EMPTY_ROOT) == 32
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_example_tree_roots(size: int) -> None:
    leaves = [leaf_hash(entry) for entry in EXAMPLE_ENTRIES[:size]]
    expected = EXAMPLE_ROOTS[size - 1]
    assert root_of(leaves) == expected
    tree = CompactRange()
    tree.append_many(leaves)
    assert tree.root() == expected
    assert range_root(0, size, ref_getter(EXAMPLE_ENTRIES)) == expected
    assert ref_mth(EXAMPLE_ENTRIES[:size]) == expected  # the reference agrees with the published roots


def test_empty_tree() -> None:
    assert root_of([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert range_root(0, 0, ref_getter([])) == EMPTY_ROOT
    assert ref_mth([]) == EMPTY_ROOT


# Compact ranges -----------------------------------------------------------------------------------------


def ref_decomposition(begin: int, end: int) -> list[tuple[int, int]]:
    """Nodes covered by [begin, end) whose parent is not, ordered by first leaf."""

    def inside(level: int, index: int) -> bool:
        return begin <= index << level and (index + 1) << level <= end

    nodes = [
        (level, index)
        for level in range(max(end, 1).bit_length() + 1)
        for index in range(begin >> level, (end >> level) + 1)
        if inside(level, index) and not inside(level + 1, index >> 1)
    ]
    return sorted(nodes, key=lambda node: node[1] << node[0])


@settings(max_examples=300)
@given(begin=st.integers(0, 5000), width=st.integers(0, 5000))
def test_decompose_matches_definition(begin: int, width: int) -> None:
    assert CompactRange.decompose(begin, begin + width) == ref_decomposition(begin, begin + width)


@given(size=st.integers(0, 600), salt=st.binary(max_size=4))
def test_compact_range_root_matches_reference(size: int, salt: bytes) -> None:
    entries = make_entries(size, salt)
    leaves = [leaf_hash(entry) for entry in entries]
    expected = ref_mth(entries)
    one_by_one = CompactRange()
    for leaf in leaves:
        one_by_one.append(leaf)
    in_bulk = CompactRange()
    in_bulk.append_many(leaves)
    assert one_by_one.root() == in_bulk.root() == root_of(leaves) == expected
    assert one_by_one == in_bulk
    assert one_by_one.end == len(one_by_one) == size
    node = ref_getter(entries)
    assert list(one_by_one.hashes) == [node(*n) for n in CompactRange.decompose(0, size)]


@st.composite
def split_ranges(draw: st.DrawFn) -> tuple[int, list[int]]:
    size = draw(st.integers(0, 400))
    cuts = draw(st.lists(st.integers(0, size), max_size=6))
    return size, sorted({0, size, *cuts})


@given(split=split_ranges(), salt=st.binary(max_size=4))
def test_merge_of_pieces_equals_single_range(split: tuple[int, list[int]], salt: bytes) -> None:
    size, bounds = split
    entries = make_entries(size, salt)
    leaves = [leaf_hash(entry) for entry in entries]
    visited: list[tuple[int, int, bytes]] = []

    def visit(level: int, index: int, value: bytes) -> None:
        visited.append((level, index, value))

    pieces = []
    for begin, end in itertools.pairwise(bounds):
        piece = CompactRange(begin)
        piece.append_many(leaves[begin:end], visit)
        assert (piece.begin, piece.end) == (begin, end)
        node = ref_getter(entries)
        assert list(piece.hashes) == [node(*n) for n in CompactRange.decompose(begin, end)]
        pieces.append(piece)
    merged = CompactRange()
    for piece in pieces:
        merged.merge(piece, visit)
    whole = CompactRange()
    whole.append_many(leaves)
    assert merged == whole
    assert merged.root() == ref_mth(entries)
    # Every perfect interior node inside [0, size) is reported exactly once, with its hash.
    expected = {(level, index) for level in range(1, size.bit_length() + 1) for index in range(size >> level)}
    assert sorted((level, index) for level, index, _ in visited) == sorted(expected)
    node = ref_getter(entries)
    assert all(value == node(level, index) for level, index, value in visited)


@given(size=st.integers(1, 300), cut=st.integers(0, 300))
def test_merge_into_non_zero_range(size: int, cut: int) -> None:
    cut = min(cut, size)
    leaves = [leaf_hash(entry) for entry in make_entries(size)]
    left = CompactRange(7)
    left.append_many(leaves[:cut])
    right = CompactRange(7 + cut)
    right.append_many(leaves[cut:])
    left.merge(right)
    single = CompactRange(7)
    single.append_many(leaves)
    assert left == single


def test_append_visits_each_new_node() -> None:
    visited: list[tuple[int, int]] = []
    tree = CompactRange()
    leaves = [leaf_hash(entry) for entry in make_entries(8)]
    for leaf in leaves:
        tree.append(leaf, lambda level, index, _value: visited.append((level, index)))
    assert visited == [(1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (2, 1), (3, 0)]


def test_append_with_failing_visitor_leaves_range_unchanged() -> None:
    leaves = [leaf_hash(entry) for entry in make_entries(8)]
    tree = CompactRange()
    tree.append_many(leaves[:7])
    before = tree.copy()

    def refuse(level: int, index: int, value: bytes) -> None:
        if level == 3:
            raise RuntimeError("store is full")

    with pytest.raises(RuntimeError):
        tree.append(leaves[7], refuse)
    assert tree == before
    tree.append(leaves[7])
    assert tree.root() == ref_mth(make_entries(8))


def test_copy_is_independent() -> None:
    tree = CompactRange()
    tree.append(leaf_hash(b"a"))
    duplicate = tree.copy()
    duplicate.append(leaf_hash(b"b"))
    assert (tree.end, duplicate.end) == (1, 2)
    assert tree.root() == ref_mth([b"a"])


def test_from_hashes_round_trip_and_validation() -> None:
    leaves = [leaf_hash(entry) for entry in make_entries(13)]
    tree = CompactRange(3)
    tree.append_many(leaves[3:])
    rebuilt = CompactRange.from_hashes(3, 13, tree.hashes)
    assert rebuilt == tree
    rebuilt.append(leaves[0])
    assert tree.end == 13
    with pytest.raises(ValueError):
        CompactRange.from_hashes(3, 13, tree.hashes[:-1])
    with pytest.raises(ValueError):
        CompactRange.from_hashes(3, 13, [*tree.hashes[:-1], b"short"])
    with pytest.raises(ValueError):
        CompactRange.from_hashes(5, 3, [])
    assert CompactRange.from_hashes(4, 4, []).hashes == ()


def test_compact_range_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        CompactRange(-1)
    tree = CompactRange()
    with pytest.raises(ValueError):
        tree.append(b"\x00" * 31)
    with pytest.raises(ValueError):
        tree.append_many([leaf_hash(b"ok"), b"bad"])
    assert tree.end == 1  # the leaf before the bad one was appended
    with pytest.raises(ValueError):
        tree.merge(CompactRange(5))
    with pytest.raises(ValueError):
        CompactRange(1).root()
    with pytest.raises(ValueError):
        CompactRange.decompose(3, 2)


def test_compact_range_errors_are_ledger_errors() -> None:
    with pytest.raises(LedgerError):
        CompactRange(2).root()


# range_root ---------------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(begin=st.integers(0, 300), width=st.integers(0, 300))
def test_range_root_matches_reference_or_refuses(begin: int, width: int) -> None:
    entries = make_entries(begin + width)
    end = begin + width
    split = 1 << max((width - 1).bit_length() - 1, 0)
    if width > 1 and begin % split:
        with pytest.raises(ValueError):
            range_root(begin, end, ref_getter(entries))
    else:
        assert range_root(begin, end, ref_getter(entries)) == ref_mth(entries[begin:end])


def test_range_root_rejects_bad_ranges() -> None:
    node = ref_getter(make_entries(8))
    for begin, end in [(1, 4), (3, 8), (-1, 2), (5, 4)]:
        with pytest.raises(ValueError):
            range_root(begin, end, node)


# Proofs against the reference ---------------------------------------------------------------------------


@st.composite
def tree_and_index(draw: st.DrawFn, max_size: int = 300) -> tuple[list[bytes], int]:
    size = draw(st.integers(1, max_size))
    return make_entries(size, draw(st.binary(max_size=4))), draw(st.integers(0, size - 1))


@st.composite
def tree_and_old_size(draw: st.DrawFn, max_size: int = 300) -> tuple[list[bytes], int]:
    size = draw(st.integers(1, max_size))
    return make_entries(size, draw(st.binary(max_size=4))), draw(st.integers(1, size))


@settings(max_examples=200)
@given(case=tree_and_index())
def test_inclusion_proof_matches_reference_and_verifies(case: tuple[list[bytes], int]) -> None:
    entries, index = case
    size = len(entries)
    proof = inclusion_proof(index, size, ref_getter(entries))
    assert proof == ref_path(index, entries)
    root = ref_mth(entries)
    leaf = leaf_hash(entries[index])
    verify_inclusion(leaf, index, size, proof, root)
    assert root_from_inclusion(leaf, index, size, proof) == root


@settings(max_examples=200)
@given(case=tree_and_old_size())
def test_consistency_proof_matches_reference_and_verifies(case: tuple[list[bytes], int]) -> None:
    entries, old_size = case
    new_size = len(entries)
    proof = consistency_proof(old_size, new_size, ref_getter(entries))
    assert proof == ref_proof(old_size, entries)
    verify_consistency(old_size, new_size, ref_mth(entries[:old_size]), ref_mth(entries), proof)


def test_every_proof_in_small_trees_matches_reference() -> None:
    entries = make_entries(33)
    node = ref_getter(entries)
    for size in range(1, len(entries) + 1):
        tree = entries[:size]
        root = ref_mth(tree)
        for index in range(size):
            proof = inclusion_proof(index, size, node)
            assert proof == ref_path(index, tree), (index, size)
            verify_inclusion(leaf_hash(tree[index]), index, size, proof, root)
        for old_size in range(1, size + 1):
            proof = consistency_proof(old_size, size, node)
            assert proof == ref_proof(old_size, tree), (old_size, size)
            verify_consistency(old_size, size, ref_mth(tree[:old_size]), root, proof)


@given(case=tree_and_index(), data=st.data())
def test_inclusion_bit_flip_is_rejected(case: tuple[list[bytes], int], data: st.DataObject) -> None:
    entries, index = case
    proof = ref_path(index, entries)
    assume(proof)
    position = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    with pytest.raises(RootMismatchError):
        verify_inclusion(
            leaf_hash(entries[index]), index, len(entries), flip_bit(proof, position, bit), ref_mth(entries)
        )


@given(case=tree_and_index(), bit=st.integers(0, 8 * HASH_SIZE - 1))
def test_inclusion_of_tampered_leaf_or_root_is_rejected(case: tuple[list[bytes], int], bit: int) -> None:
    entries, index = case
    proof = ref_path(index, entries)
    leaf, root = leaf_hash(entries[index]), ref_mth(entries)
    with pytest.raises(RootMismatchError):
        verify_inclusion(flip_bit([leaf], 0, bit)[0], index, len(entries), proof, root)
    with pytest.raises(RootMismatchError) as raised:
        verify_inclusion(leaf, index, len(entries), proof, flip_bit([root], 0, bit)[0])
    assert raised.value.calculated == root


@given(case=tree_and_index(), data=st.data())
def test_inclusion_with_wrong_index_is_rejected(case: tuple[list[bytes], int], data: st.DataObject) -> None:
    entries, index = case
    size = len(entries)
    wrong = data.draw(st.integers(-3, size + 3).filter(lambda value: value != index))
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(entries[index]), wrong, size, ref_path(index, entries), ref_mth(entries))


@given(case=tree_and_index(), data=st.data())
def test_inclusion_with_wrong_size_is_rejected(case: tuple[list[bytes], int], data: st.DataObject) -> None:
    entries, index = case
    size = len(entries)
    more = make_entries(2 * size + 2)[size:]  # distinct from every entry already in the tree
    wrong = data.draw(st.integers(0, 2 * size + 2).filter(lambda value: value != size))
    claimed = (entries + more)[:wrong]
    proof = ref_path(index, entries)
    # Claim the leaf is in a tree of another size, with that tree's true root.
    assume(index >= wrong or proof != ref_path(index, claimed))
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(entries[index]), index, wrong, proof, ref_mth(claimed))


def test_sizes_are_bound_by_the_roots_not_the_proofs() -> None:
    # RFC 9162's algorithms read the sizes only through the proof's shape, so a proof can also fit other
    # sizes with the same roots: the path for leaf 0 of a 3-leaf tree has the shape of one in a 4-leaf tree
    # and still yields the 3-leaf root; the 1 -> 2 consistency proof fits 2 -> 3 with the same roots.
    # transparency-dev/merkle behaves the same. Verifiers must take each size and its root from one
    # signed checkpoint, never one of them from elsewhere.
    entries = make_entries(3)
    verify_inclusion(leaf_hash(entries[0]), 0, 4, ref_path(0, entries), ref_mth(entries))
    old_root, new_root = ref_mth(entries[:1]), ref_mth(entries[:2])
    verify_consistency(2, 3, old_root, new_root, ref_proof(1, entries[:2]))


@given(case=tree_and_old_size(), data=st.data())
def test_consistency_bit_flip_is_rejected(case: tuple[list[bytes], int], data: st.DataObject) -> None:
    entries, old_size = case
    proof = ref_proof(old_size, entries)
    assume(proof)
    position = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    with pytest.raises(RootMismatchError):
        verify_consistency(
            old_size,
            len(entries),
            ref_mth(entries[:old_size]),
            ref_mth(entries),
            flip_bit(proof, position, bit),
        )


@given(case=tree_and_old_size(), data=st.data())
def test_consistency_with_wrong_sizes_is_rejected(case: tuple[list[bytes], int], data: st.DataObject) -> None:
    entries, old_size = case
    new_size = len(entries)
    longer = entries + make_entries(2 * new_size + 2)[new_size:]
    proof = ref_proof(old_size, entries)
    wrong_old = data.draw(st.integers(0, new_size + 2))
    wrong_new = data.draw(st.integers(0, 2 * new_size + 2))
    assume((wrong_old, wrong_new) != (old_size, new_size))
    # A genuine proof for the claimed sizes is rightly accepted; any other must not be.
    assume(not (0 < wrong_old <= wrong_new and proof == ref_proof(wrong_old, longer[:wrong_new])))
    old_root, new_root = ref_mth(longer[:wrong_old]), ref_mth(longer[:wrong_new])
    with pytest.raises(VerificationError):
        verify_consistency(wrong_old, wrong_new, old_root, new_root, proof)


@given(case=tree_and_old_size(), bit=st.integers(0, 8 * HASH_SIZE - 1))
def test_consistency_with_tampered_roots_is_rejected(case: tuple[list[bytes], int], bit: int) -> None:
    entries, old_size = case
    new_size = len(entries)
    proof = ref_proof(old_size, entries)
    old_root, new_root = ref_mth(entries[:old_size]), ref_mth(entries)
    with pytest.raises(VerificationError):
        verify_consistency(old_size, new_size, flip_bit([old_root], 0, bit)[0], new_root, proof)
    with pytest.raises(VerificationError):
        verify_consistency(old_size, new_size, old_root, flip_bit([new_root], 0, bit)[0], proof)


# Verification edge cases --------------------------------------------------------------------------------


def test_verification_error_types() -> None:
    entries = make_entries(5)
    leaf, root = leaf_hash(entries[1]), ref_mth(entries)
    proof = ref_path(1, entries)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, 5, 5, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, 1, 5, proof[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, 1, 5, [*proof[:-1], proof[-1][:31]], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf[:31], 1, 5, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, 1, 5, proof, root + b"\x00")
    with pytest.raises(RootMismatchError) as raised:
        verify_inclusion(leaf, 1, 5, proof, EMPTY_ROOT)
    assert (raised.value.expected, raised.value.calculated) == (EMPTY_ROOT, root)

    old_root = ref_mth(entries[:3])
    consistency = ref_proof(3, entries)
    with pytest.raises(ProofError):
        verify_consistency(0, 5, EMPTY_ROOT, root, [])
    with pytest.raises(ProofError):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        verify_consistency(5, 3, root, old_root, consistency)
    with pytest.raises(ProofError):
        verify_consistency(3, 5, old_root, root, [])
    with pytest.raises(ProofError):
        verify_consistency(5, 5, root, root, [root])
    with pytest.raises(InconsistencyError):
        verify_consistency(5, 5, root, old_root, [])
    with pytest.raises(RootMismatchError) as mismatch:
        verify_consistency(3, 5, old_root, EMPTY_ROOT, consistency)
    assert (mismatch.value.expected, mismatch.value.calculated) == (EMPTY_ROOT, root)
    verify_consistency(5, 5, root, root, [])


def test_proof_generation_rejects_out_of_range_arguments() -> None:
    node = ref_getter(make_entries(4))
    for index, size in [(4, 4), (-1, 4), (0, 0)]:
        with pytest.raises(ValueError):
            inclusion_proof(index, size, node)
    for old_size, new_size in [(0, 4), (5, 4), (-1, 4), (0, 0)]:
        with pytest.raises(ValueError):
            consistency_proof(old_size, new_size, node)
    assert consistency_proof(4, 4, node) == []
    assert inclusion_proof(0, 1, node) == []


# TiledNodeReader ----------------------------------------------------------------------------------------


class FakeTileStore:
    """Keeps leaf hashes and the nodes a CompactRange reports at every ``stride``-th level."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads: list[tuple[int, int, int]] = []

    def add_leaf(self, index: int, value: bytes) -> None:
        self.nodes[(0, index)] = value

    def visit(self, level: int, index: int, value: bytes) -> None:
        if level % self.stride == 0:
            self.nodes[(level, index)] = value

    def read(self, level: int, start: int, count: int) -> list[bytes]:
        assert level % self.stride == 0, f"level {level} is not stored"
        self.reads.append((level, start, count))
        return [self.nodes[(level, index)] for index in range(start, start + count)]


def build_tiled(entries: Sequence[bytes], stride: int) -> FakeTileStore:
    store = FakeTileStore(stride)
    tree = CompactRange()
    for index, entry in enumerate(entries):
        value = leaf_hash(entry)
        store.add_leaf(index, value)
        tree.append(value, store.visit)
    return store


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(1, 3000),
    stride=st.sampled_from([8, 3, 1]),
    data=st.data(),
)
def test_tiled_reader_proofs_match_reference(size: int, stride: int, data: st.DataObject) -> None:
    entries = make_entries(size)
    store = build_tiled(entries, stride)
    reader = TiledNodeReader(store.read, stride=stride, cache_size=64)
    tree_size = data.draw(st.integers(1, size))
    index = data.draw(st.integers(0, tree_size - 1))
    old_size = data.draw(st.integers(1, tree_size))
    prefix = entries[:tree_size]
    assert inclusion_proof(index, tree_size, reader) == ref_path(index, prefix)
    assert consistency_proof(old_size, tree_size, reader) == ref_proof(old_size, prefix)
    assert range_root(0, tree_size, reader) == ref_mth(prefix)
    assert all(count <= 1 << (stride - 1) for _, _, count in store.reads)


def test_tiled_reader_computes_unstored_levels_from_one_read() -> None:
    entries = make_entries(1024)
    store = build_tiled(entries, 8)
    reader = TiledNodeReader(store.read)
    assert reader.stride == 8
    assert reader(7, 3) == ref_mth(entries[3 * 128 : 4 * 128])
    assert store.reads == [(0, 3 * 128, 128)]
    assert reader(8, 2) == ref_mth(entries[512:768])
    assert reader(9, 1) == ref_mth(entries[512:1024])
    assert store.reads[1:] == [(8, 2, 1), (8, 2, 2)]


def test_tiled_reader_cache_is_bounded() -> None:
    entries = make_entries(64)
    store = build_tiled(entries, 8)
    reader = TiledNodeReader(store.read, cache_size=2)
    reader(3, 0)
    reader(3, 0)
    assert len(store.reads) == 1
    reader(3, 1)
    reader(3, 2)  # evicts (3, 0)
    reader(3, 0)
    assert len(store.reads) == 4
    uncached = TiledNodeReader(store.read, cache_size=0)
    uncached(0, 5)
    uncached(0, 5)
    assert len(store.reads) == 6


def test_tiled_reader_rejects_short_reads_and_bad_arguments() -> None:
    short: Callable[[int, int, int], list[bytes]] = lambda level, start, count: []  # noqa: E731
    with pytest.raises(StoreError):
        TiledNodeReader(short)(2, 0)
    with pytest.raises(ValueError):
        TiledNodeReader(short, stride=0)
    with pytest.raises(ValueError):
        TiledNodeReader(short)(-1, 0)

"""The subject map's node reader: bulk prefetch along key paths, then reads from memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lineage_ledger.core import smt
from lineage_ledger.ledger.completeness import MapReader, encode_node, map_changes
from lineage_ledger.store import open_store
from lineage_ledger.store.base import BatchWrite, EntryRow


class _CountingStore:
    """Wraps a store and counts subject-map reads."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.single = 0
        self.bulk = 0

    def map_node(self, digest: bytes) -> bytes | None:
        self.single += 1
        return self.inner.map_node(digest)  # type: ignore[attr-defined,no-any-return]

    def map_nodes(self, digests: list[bytes]) -> dict[bytes, bytes]:
        self.bulk += 1
        return self.inner.map_nodes(digests)  # type: ignore[attr-defined,no-any-return]


def test_prefetch_loads_every_node_an_update_needs_with_one_query_per_level(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "m.db"))
    store.initialise({"origin": "map.example/log", "verifier_key": "unused"})
    heads = [(f"token:{i:064x}", hashlib.sha256(bytes([i % 256, i // 256])).digest(), 1, i) for i in range(3000)]
    nothing: dict[bytes, smt.Node] = {}
    root, nodes = smt.update(smt.EMPTY, map_changes(heads), nothing.__getitem__)
    body = b"{}"
    store.write(
        BatchWrite(
            entries=[EntryRow(0, "ledger:blocks", None, None, bytes(32), hashlib.sha256(body).digest(), "ok", body)],
            map_nodes=[(h, encode_node(n)) for h, n in nodes.items()],
        )
    )
    counting = _CountingStore(store)
    reader = MapReader(counting, cache_size=100_000)  # type: ignore[arg-type]
    changed = map_changes((s, hashlib.sha256(s.encode()).digest(), 2, i + 5000) for s, _, _, i in heads[::7])
    reader.prefetch(root, changed)
    levels = counting.bulk
    assert 0 < levels <= 40  # one query per level of the tree, not one per node
    expected_root, _ = smt.update(root, changed, lambda h: nodes[h])
    new_root, _ = smt.update(root, changed, reader)
    assert new_root == expected_root
    assert counting.single == 0  # everything the update read was already in memory
    store.close()


def test_a_stored_node_that_does_not_hash_to_its_name_is_refused_as_it_is_loaded(tmp_path: Path) -> None:
    import pytest

    from lineage_ledger.errors import RootMismatchError

    store = open_store(str(tmp_path / "m.db"))
    store.initialise({"origin": "map.example/log", "verifier_key": "unused"})
    heads = [(f"token:{i:064x}", hashlib.sha256(bytes([i])).digest(), 1, i) for i in range(40)]
    nothing: dict[bytes, smt.Node] = {}
    root, nodes = smt.update(smt.EMPTY, map_changes(heads), nothing.__getitem__)
    # one interior node stored under its name but with its children swapped: what an edit of the file does
    victim, node = next((h, n) for h, n in nodes.items() if isinstance(n, smt.Interior) and h != root)
    assert isinstance(node, smt.Interior)
    forged = {**nodes, victim: smt.Interior(node.right, node.left)}
    body = b"{}"
    store.write(
        BatchWrite(
            entries=[EntryRow(0, "ledger:blocks", None, None, bytes(32), hashlib.sha256(body).digest(), "ok", body)],
            map_nodes=[(h, encode_node(n)) for h, n in forged.items()],
        )
    )
    changed = map_changes((s, hashlib.sha256(s.encode()).digest(), 2, i + 100) for s, _, _, i in heads)
    with pytest.raises(RootMismatchError, match="does not hash to its name"):
        MapReader(store).prefetch(root, changed)  # loaded in bulk, level by level
    with pytest.raises(RootMismatchError, match="does not hash to its name"):
        smt.update(root, changed, MapReader(store), checked_reader=True)  # loaded one by one
    store.close()

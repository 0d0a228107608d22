"""``lineage prove --consistency M N`` for any 0 < M <= N, and ``lineage checkpoint --list``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_ledger.core.merkle import leaf_hash, root_of, verify_consistency
from lineage_ledger.core.note import Checkpoint, open_note, parse_verifier_key
from lineage_ledger.store import open_store
from tests.cli.test_cli import run
from tests.conftest import token_id
from tests.ledger.test_lineage import Book


@dataclass(frozen=True)
class Built:
    path: Path
    verifier: str
    signed: tuple[int, int]
    roots: list[bytes]
    """roots[n]: the root of the first n entries, computed here from the entry bytes."""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("proofs") / "ledger.db"
    book = Book(path)
    t = token_id("proofs-cli")
    book.token("ISSUED", t, 0)
    for n in range(1, 6):
        book.token("USED", t, n, resource=f"/r/{n}", outcome="ALLOW")
    first = book.ledger.seal()
    for n in range(6, 12):
        book.token("USED", t, n, resource=f"/r/{n}", outcome="ALLOW")
    second = book.ledger.seal()
    assert first is not None
    assert second is not None
    verifier = str(book.ledger.log_verifier())
    book.close()
    store = open_store(str(path), readonly=True)
    try:
        leaves = [leaf_hash(row.body) for row in store.entries(0, store.size())]
    finally:
        store.close()
    return Built(path, verifier, (first.size, second.size), [root_of(leaves[:n]) for n in range(len(leaves) + 1)])


def prove(capsys: pytest.CaptureFixture[str], built: Built, old: int, new: int) -> tuple[int, dict[str, object], str]:
    result = run(capsys, "prove", "--consistency", str(old), str(new), "--ledger", str(built.path), "--json")
    return result.code, (result.json() if result.code == 0 else {}), result.err


@pytest.mark.parametrize(("old", "new"), [(1, 2), (3, 7), (5, 5), (4, 13)])
def test_consistency_between_any_two_sizes(
    capsys: pytest.CaptureFixture[str], built: Built, old: int, new: int
) -> None:
    assert new < len(built.roots)
    code, got, err = prove(capsys, built, old, new)
    assert code == 0, err
    assert got["old_root"] == built.roots[old].hex()
    assert got["new_root"] == built.roots[new].hex()
    proof = [bytes.fromhex(h) for h in got["proof"]]  # type: ignore[attr-defined]
    verify_consistency(old, new, built.roots[old], built.roots[new], proof)


def test_signed_checkpoints_are_attached_where_they_exist(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    _first, second = built.signed
    code, got, err = prove(capsys, built, 3, second)
    assert code == 0, err
    assert got["old_checkpoint"] is None
    text, _ = open_note(str(got["new_checkpoint"]), [parse_verifier_key(built.verifier)])
    assert Checkpoint.from_text(text).root_hash == built.roots[second]


@pytest.mark.parametrize(("old", "new"), [(5, 3), (0, 3), (1, 10_000)])
def test_sizes_out_of_order_or_past_the_log_are_usage_errors(
    capsys: pytest.CaptureFixture[str], built: Built, old: int, new: int
) -> None:
    code, _, err = prove(capsys, built, old, new)
    assert code == 2
    assert "--consistency" in err


def test_checkpoint_list(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    result = run(capsys, "checkpoint", "--list", "--ledger", str(built.path), "--json")
    assert result.code == 0, result.err
    listed = result.json()["checkpoints"]
    assert [cp["size"] for cp in listed] == list(built.signed)
    assert [cp["root"] for cp in listed] == [built.roots[size].hex() for size in built.signed]
    human = run(capsys, "checkpoint", "--list", "--ledger", str(built.path))
    assert human.out.splitlines() == [f"{size}\t{built.roots[size].hex()}" for size in built.signed]

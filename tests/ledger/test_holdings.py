"""Which tokens a user held, and which were active at an instant (ledger.holdings), on the CLI and over HTTP.

2026-12-01 (instants from the standard library's calendar): dana's refresh token R (09:00, client web) is
refreshed into C (09:10), which is rotated into G (09:20); R is revoked at 10:00, which ends G too. Dana's E
(08:00, client mobile) expires by its own expires_at at 08:30; her L is issued at 11:00. Erin's X (09:05,
client web) uses /v1/a at 09:06 and never ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.merkle import leaf_hash, verify_inclusion
from lineage_ledger.core.note import Checkpoint, open_note, parse_verifier_key
from lineage_ledger.errors import InputError
from lineage_ledger.ledger.holdings import active_at, tokens_of_user
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.store import open_store
from tests.cli.test_query_cli import run
from tests.conftest import token_id
from tests.ledger.test_lineage import Book
from tests.ledger.test_lineage_time import ns, off


@dataclass(frozen=True)
class Story:
    path: Path
    verifier: str
    t: dict[str, str]
    i: dict[str, int]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    path = tmp_path_factory.mktemp("holdings") / "ledger.db"
    book = Book(path)
    t = {n: token_id(f"holdings-{n}") for n in ("R", "C", "G", "E", "X", "L")}
    i: dict[str, int] = {}
    i["bE"] = book.token(
        "ISSUED", t["E"], off(8), user_id="dana", client_id="mobile", expires_at=format_reading(ns(8, 30), 0)
    )
    i["bR"] = book.token("ISSUED", t["R"], off(9), user_id="dana", client_id="web")
    i["bX"] = book.token("ISSUED", t["X"], off(9, 5), user_id="erin", client_id="web")
    i["uX"] = book.token("USED", t["X"], off(9, 6), resource="/v1/a", outcome="ALLOW")
    i["bC"] = book.token("REFRESHED", t["C"], off(9, 10), parent_token_id=t["R"])
    i["bG"] = book.token("ROTATED", t["G"], off(9, 20), parent_token_id=t["C"])
    i["rR"] = book.token("REVOKED", t["R"], off(10))
    i["bL"] = book.token("ISSUED", t["L"], off(11), user_id="dana")
    book.ledger.seal()
    verifier = str(book.ledger.log_verifier())
    book.close()
    return Story(path, verifier, t, i)


@pytest.fixture
def lineage(story: Story) -> Iterator[Lineage]:
    store = open_store(str(story.path), readonly=True)
    yield Lineage(store)
    store.close()


def names(story: Story, tokens: list[str]) -> list[str]:
    by_id = {v: k for k, v in story.t.items()}
    return [by_id[t] for t in tokens]


def test_tokens_a_user_held(story: Story, lineage: Lineage) -> None:
    def held(start: str | None = None, end: str | None = None) -> list[str]:
        return names(story, [life.token_id for life in tokens_of_user(lineage, "dana", start, end).tokens])

    assert held() == ["E", "R", "C", "G", "L"]
    assert held("2026-12-01T09:00:00Z", "2026-12-01T10:30:00Z") == ["R", "C", "G"]
    assert held("2026-12-01T08:40:00Z", "2026-12-01T08:50:00Z") == []  # E had expired, R not yet born
    assert held("2026-12-01T10:00:00Z", "2026-12-01T10:59:00Z") == []  # R revoked, G with it
    lives = {life.token_id: life for life in tokens_of_user(lineage, "dana").tokens}
    t, i = story.t, story.i
    assert (lives[t["G"]].ended_by, lives[t["G"]].ended_index) == ("ancestor_revoked:" + t["R"], i["rR"])
    assert (lives[t["C"]].ended_by, lives[t["C"]].ended_index) == ("ROTATED", i["bG"])
    assert (lives[t["E"]].ended_by, lives[t["E"]].ended_at) == ("expires_at", format_reading(ns(8, 30), 0))
    assert tokens_of_user(lineage, "nobody").tokens == []


def test_tokens_active_at_an_instant(story: Story, lineage: Lineage) -> None:
    def active(at: str, **only: str) -> list[str]:
        return names(story, [life.token_id for life in active_at(lineage, at, **only).tokens])

    assert active("2026-12-01T09:30:00Z") == ["R", "X", "G"]
    assert active("2026-12-01T09:30:00Z", user_id="dana") == ["R", "G"]
    assert active("2026-12-01T09:30:00Z", client_id="web") == ["R", "X", "G"]
    assert active("2026-12-01T09:30:00Z", client_id="mobile") == []
    assert active("2026-12-01T08:10:00Z", client_id="mobile") == ["E"]
    assert active("2026-12-01T09:30:00Z", resource="/v1/a") == ["X"]
    assert active("2026-12-01T09:05:30Z", resource="/v1/a") == []  # X had not used it yet
    assert active("2026-12-01T10:00:00Z") == ["X"]
    with pytest.raises(InputError):
        active_at(lineage, "half past nine")


def test_cli_answers_with_proofs(capsys: pytest.CaptureFixture[str], story: Story) -> None:
    result = run(
        capsys,
        "query",
        "tokens-of-user",
        "dana",
        "--start",
        "2026-12-01T09:00:00Z",
        "--end",
        "2026-12-01T10:30:00Z",
        "--proofs",
        "--ledger",
        str(story.path),
        "--json",
    )
    assert result.code == 0, result.err
    got = result.json()
    t, i = story.t, story.i
    assert [life["token_id"] for life in got["answer"]["tokens"]] == [t["R"], t["C"], t["G"]]
    assert got["evidence"] == sorted({i["bR"], i["rR"], i["bC"], i["bG"]})
    text, _ = open_note(got["proofs"]["checkpoint"], [parse_verifier_key(story.verifier)])
    cp = Checkpoint.from_text(text)
    for index in got["evidence"]:
        path = [bytes.fromhex(h) for h in got["proofs"]["inclusion"][str(index)]]
        verify_inclusion(leaf_hash(got["proofs"]["entries"][str(index)].encode()), index, cp.size, path, cp.root_hash)
    active = run(
        capsys,
        "query",
        "active-at",
        "--at",
        "2026-12-01T09:30:00Z",
        "--user",
        "dana",
        "--ledger",
        str(story.path),
        "--json",
    ).json()
    assert [life["token_id"] for life in active["answer"]["tokens"]] == [t["R"], t["G"]]
    human = run(capsys, "query", "tokens-of-user", "dana", "--ledger", str(story.path))
    assert t["G"] in human.out  # whole ids, copyable
    assert "2026-12-01T09:20:00Z" in human.out

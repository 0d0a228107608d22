"""The user documentation stays inside the repository and describes the product, not how it was built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
DIARY = re.compile(
    r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|previous|this|last|next|earlier)"
    r" sessions?\b|\bthe commit before\b|\bround \d+ of\b",
    re.IGNORECASE,
)


def _prose(page: Path) -> str:
    """The page without its code blocks and code spans, where brackets are code, not links."""
    text = re.sub(r"^```.*?^```$", "", page.read_text("utf-8"), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _name(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    for target in LINK.findall(_prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(REPO), f"{_name(page)} links outside the repository: {target}"
        assert resolved.exists(), f"{_name(page)} links to a missing file: {target}"


_SHARED = "." + "./shared"  # spelled in two parts: tests/test_repository_paths.py flags the literal path


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_page_names_a_path_above_the_repository(page: Path) -> None:
    assert _SHARED not in page.read_text("utf-8")


@pytest.mark.parametrize(
    "page", [*PAGES, *sorted((REPO / "benchmarks").glob("*.py"))], ids=lambda p: str(p.relative_to(REPO))
)
def test_no_page_tells_the_history_of_the_work(page: Path) -> None:
    found = DIARY.search(page.read_text("utf-8"))
    assert found is None, f"{page.relative_to(REPO)}: {found.group(0)!r}: history belongs to git"


def test_every_docs_page_is_in_the_index() -> None:
    index = (REPO / "docs" / "README.md").read_text("utf-8")
    for page in (REPO / "docs").iterdir():
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not list {page.name}"

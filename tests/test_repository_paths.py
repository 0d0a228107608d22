"""Nothing in the repository names a path above its root: a bare clone, with no folder beside it, is complete.

Python files are read as syntax trees: a path built from ``__file__`` (``.parent``, ``.parents[k]``,
``os.path.dirname``) must not climb above the repository root, and no string literal may hold a ``..`` path
segment. Shell scripts and the Makefile are read as text for ``..`` segments. The checker itself is tested on
small samples, so a scan that finds nothing is a scan that would have found something.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED_TREES = ("src", "tests", "benchmarks", "scripts")
SCANNED_FILES = ("Makefile", "pyproject.toml")
DATA_TREES = (Path("tests") / "vectors",)
"""Third-party data copied unchanged: it names no path of ours."""
_UP_SEGMENT = re.compile(r"(?:^|[/\\\s\"'=:(])\.\.[/\\]|[/\\]\.\.(?:[/\\\s\"')]|$)")
"""``../`` or ``/..``: a bare ``..`` is left alone, it is also how ranges are written ("3..7")."""
UP = "." * 2
"""The parent-directory name, spelled so that this file's own samples do not trip the scan."""


def _levels_up(node: ast.expr) -> int | None:
    """How many directories above the file ``node`` names, if it is a path built from ``__file__``; else None.

    ``Path(__file__)`` and ``__file__`` name the file itself (0 levels up); ``.parent`` and ``os.path.dirname``
    climb one level, ``.parents[k]`` climbs ``k + 1``; ``.resolve()``, ``.absolute()`` and ``/ "name"`` stay.
    """
    if isinstance(node, ast.Name) and node.id == "__file__":
        return 0
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if isinstance(func, ast.Attribute) and name in {"resolve", "absolute", "expanduser"}:
            return _levels_up(func.value)
        if name in {"Path", "PurePath", "dirname", "abspath", "realpath"} and node.args:
            inner = _levels_up(node.args[0])
            if inner is None:
                return None
            return inner + 1 if name == "dirname" else inner
        return None
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        inner = _levels_up(node.value)
        return None if inner is None else inner + 1
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
        inner = _levels_up(node.value.value)
        index = node.slice
        if inner is None or not (isinstance(index, ast.Constant) and isinstance(index.value, int)):
            return None
        return inner + index.value + 1
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        inner = _levels_up(node.left)
        if inner is not None and isinstance(node.right, ast.Constant) and node.right.value == UP:
            return inner + 1
        return inner
    return None


def _joins_parent(node: ast.AST) -> bool:
    """``something / ".."`` or ``Path("..")``: a step up whose start the scan cannot know, so never allowed."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return isinstance(node.right, ast.Constant) and node.right.value == UP
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"Path", "PurePath"}:
        return any(isinstance(arg, ast.Constant) and arg.value == UP for arg in node.args)
    return False


def python_escapes(source: str, relative: Path) -> list[str]:
    """Where ``source`` (the file at ``relative`` inside the repository) names a path above the repository root."""
    # A file at a/b/c.py is 0 levels up; a/b is 1, a is 2, the root is 3 = len(parts): more is outside.
    limit = len(relative.parts)
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=str(relative))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _UP_SEGMENT.search(node.value):
            found.append(f"{relative}:{node.lineno}: string with a '..' path segment: {node.value!r}")
        elif isinstance(node, ast.expr) and _joins_parent(node):
            found.append(f"{relative}:{node.lineno}: joins '{UP}' to a path")
        elif isinstance(node, ast.expr) and not isinstance(node, ast.Constant):
            levels = _levels_up(node)
            if levels is not None and levels > limit:
                found.append(f"{relative}:{node.lineno}: climbs {levels} levels from the file, above the root")
    return list(dict.fromkeys(found))  # a nested expression is reported once per line, not once per step


def text_escapes(text: str, relative: Path) -> list[str]:
    """Where a shell script or Makefile at ``relative`` holds a ``..`` path segment outside a comment."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        if _UP_SEGMENT.search(code):
            found.append(f"{relative}:{number}: '..' path segment: {line.strip()}")
    return found


def scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for tree in SCANNED_TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            relative = path.relative_to(ROOT)
            if not path.is_file() or any(relative.is_relative_to(data) for data in DATA_TREES):
                continue
            if "__pycache__" in relative.parts or path.suffix in {".pyc", ".db"}:
                continue
            files.append(path)
    return files


def escapes(path: Path) -> list[str]:
    relative = path.relative_to(ROOT)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return python_escapes(text, relative)
    return text_escapes(text, relative)


def test_no_file_names_a_path_above_the_repository_root() -> None:
    files = scanned_files()
    assert any(f.name == "test_repository_paths.py" for f in files), "the scan must cover tests/"
    assert any(f.suffix == ".sh" for f in files), "the scan must cover scripts/"
    problems = [problem for path in files for problem in escapes(path)]
    assert problems == []


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("tests/core/test_x.py", 'V = Path(__file__).resolve().parents[2].parent / "outside" / "testvectors"\n'),
        ("tests/core/test_x.py", "V = Path(__file__).resolve().parents[3]\n"),
        ("tests/test_x.py", "V = Path(__file__).parent.parent.parent\n"),
        ("src/pkg/mod.py", "V = dirname(dirname(dirname(dirname(os.path.abspath(__file__)))))\n"),
        ("tests/test_x.py", f'V = ROOT / "{UP}" / "shared"\n'),
        ("tests/test_x.py", f'V = Path("{UP}")\n'),
        ("tests/test_x.py", f'V = Path("{UP}/shared/testvectors")\n'),
        ("benchmarks/b.py", f'open("/srv/x/{UP}/y")\n'),
    ],
)
def test_python_paths_above_the_root_are_found(relative: str, source: str) -> None:
    assert python_escapes(source, Path(relative)) != []


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("tests/core/test_x.py", 'V = Path(__file__).resolve().parents[1] / "vectors"\n'),
        ("tests/core/test_x.py", "ROOT = Path(__file__).resolve().parents[2]\n"),
        ("tests/test_x.py", 'V = Path(__file__).parent.parent / "scripts"\n'),
        ("src/pkg/mod.py", 'print("loading...", "a..b", "...", f"{first}..{last}", "..")\n'),
    ],
)
def test_python_paths_inside_the_root_pass(relative: str, source: str) -> None:
    assert python_escapes(source, Path(relative)) == []


def test_shell_paths_above_the_root_are_found() -> None:
    assert text_escapes(f'here="$(dirname "$0")/{UP}/{UP}"\n', Path("scripts/x.sh")) != []
    assert text_escapes(f"vectors: {UP}/shared/testvectors\n", Path("Makefile")) != []
    assert text_escapes(f'# a comment may say {UP}/ freely\nhere="$(dirname "$0")"\n', Path("scripts/x.sh")) == []

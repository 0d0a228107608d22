"""How the CLI shows things to people: its consoles, counts in words, and tables that never cut a cell."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

__all__ = [
    "counted",
    "error_console",
    "output_console",
    "print_json",
    "print_table",
    "progress",
    "silence_stdout",
]

_UNBOUNDED = 1 << 20


class _CliConsole(Console):
    """A console that, when the reader of its output goes away (``lineage ... | head``), raises
    BrokenPipeError for the CLI's main() to end the command quietly with the status a command killed by
    SIGPIPE has, rather than rich's own exit with status 1 (which here means "verification failed")."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


def output_console() -> Console:
    """The console for a command's answers (standard output). Not a terminal: 160 columns, no colour."""
    return _CliConsole(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def error_console() -> Console:
    """The console for errors, warnings and progress (standard error)."""
    return _CliConsole(stderr=True, highlight=False, soft_wrap=True)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number that agrees with it: "1 token", "2 tokens", "0 entries"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` with every cell whole. A table wider than the console is printed at its natural width
    (the terminal wraps its lines) instead of being squeezed, which would wrap or cut token ids, HLC readings
    and resources so that they could no longer be copied."""
    natural = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    wide = _CliConsole(
        file=console.file,
        width=natural,
        highlight=False,
        soft_wrap=True,
        force_terminal=console.is_terminal,
        color_system=console.color_system,  # type: ignore[arg-type]
        no_color=console.no_color,
    )
    wide.print(table)


def silence_stdout() -> None:
    """Point standard output at /dev/null once its reader has gone away, so that flushing it at exit does
    not fail on the broken pipe again."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (a test's capture): nothing will flush to a pipe
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def print_json(console: Console, value: Any) -> None:
    """Print ``value`` as JSON: indented and coloured on a terminal, one plain line otherwise."""
    console.print_json(json.dumps(value), sort_keys=False) if sys.stdout.isatty() else print(json.dumps(value))


@contextmanager
def progress(console: Console, quiet: bool, label: str, total: int | None) -> Iterator[Any]:
    """A progress bar on ``console`` (shown only on a terminal, and not when ``quiet``); yields the function
    that moves it: ``advance(done, total=total)``."""
    show = not quiet and console.is_terminal
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, total=total: bar.update(task, completed=done, total=total)

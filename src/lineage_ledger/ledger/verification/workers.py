"""The worker machinery: the log cut into chunks of whole blocks, each checked by chunk.verify_chunk in a
process pool (forked where that is safe, else spawned) or, with one worker, in this process; the results
come back in log order while the workers go on with later chunks."""

from __future__ import annotations

import contextlib
import gc
import itertools
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import Final

from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.verification.chunk import ChunkResult, verify_chunk
from lineage_ledger.ledger.verification.derived import IndexCheck, Scan, stored_indexes

__all__ = ["chunk_ranges", "chunk_results", "frozen_heap", "start_method"]

_IN_FLIGHT_PER_WORKER: Final = 2
"""Chunks submitted ahead of the one the coordinator waits for, per worker."""


def start_method() -> str:
    """How to start worker processes: fork where that is safe, spawn elsewhere.

    A forked worker starts in milliseconds and imports nothing; a spawned one pays for a fresh interpreter,
    this package and the caller's ``__main__`` (the CLI's, about 0.3 s each). Forking is safe on Linux when
    this process runs a single thread (a lock held by another thread would stay held in the child) and has
    no store connection of ours open (the caller closes it first); a threaded host, such as the HTTP
    service, gets spawn.
    """
    return "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """While forked workers run, keep the collector off the objects this process already holds.

    A forked worker shares this process's memory page by page until either side writes to a page. A full
    collection writes to every object it scans, so in this process (or in a worker, whose initializer
    freezes what it inherited) it would copy nearly every page of a large heap, such as the benchmark's.
    gc.freeze sets the existing objects aside until gc.unfreeze (CPython's advice for forking servers);
    objects made meanwhile are collected as usual. Only for fork, so only in a single-threaded process;
    left alone if something else froze objects already.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def chunk_results(
    url: str,
    chunks: list[tuple[int, int]],
    cut_sizes: list[int],
    keyring: Keyring,
    n_workers: int,
    context: BaseContext | None,
    scan: Scan | None,
    check: IndexCheck | None = None,
) -> Iterator[ChunkResult]:
    """The chunks' results in log order: from a process pool (later chunks go on in the workers while the
    caller folds earlier results) or, without ``context``, computed here one after another. ``scan`` gets
    its result once the last chunk's is out. The chunks sum their derived rows as ``check`` says."""

    def cuts_in(a: int, b: int) -> list[int]:
        return [c for c in cut_sizes if a < c <= b]

    if context is None:
        for a, b in chunks:
            yield verify_chunk(url, a, b, cuts_in(a, b), keyring, check)
        if scan is not None:
            scan.result = stored_indexes(scan.url, scan.starts, scan.check)
        return
    workers = min(n_workers, len(chunks))
    forked = context.get_start_method() == "fork"
    with (
        frozen_heap() if forked else contextlib.nullcontext(),
        ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=gc.freeze if forked else None) as pool,
    ):
        # A window of chunks in flight: the workers never wait for work, and results the caller has not yet
        # folded stay few, so memory does not grow with the log.
        queue = iter(chunks)

        def submit(chunk: tuple[int, int]) -> Future[ChunkResult]:
            a, b = chunk
            return pool.submit(verify_chunk, url, a, b, cuts_in(a, b), keyring, check)

        ahead: deque[Future[ChunkResult]] = deque(map(submit, itertools.islice(queue, _IN_FLIGHT_PER_WORKER * workers)))
        scanning = None if scan is None else pool.submit(stored_indexes, scan.url, scan.starts, scan.check)
        try:
            while ahead:
                result = ahead.popleft().result()
                following = next(queue, None)
                if following is not None:
                    ahead.append(submit(following))
                yield result
            if scan is not None and scanning is not None:
                scan.result = scanning.result()
        finally:
            for fut in ahead:
                fut.cancel()
            if scanning is not None:
                scanning.cancel()


def chunk_ranges(size: int, seal_indices: list[int], target: int) -> list[tuple[int, int]]:
    """Split [0, size) into ranges of about ``target`` entries that each start at a block boundary."""
    starts = [0] + [i + 1 for i in seal_indices if i + 1 < size]
    out: list[tuple[int, int]] = []
    begin = 0
    for s in starts[1:]:
        if s - begin >= target:
            out.append((begin, s))
            begin = s
    out.append((begin, size))
    return [c for c in out if c[0] < c[1]]

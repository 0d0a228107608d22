"""Publishing, the last stage of the write path: the signed promise each commit answers with, and the seal
that closes a block (a seal entry in the log, the subject map's new root, a signed checkpoint).

``OpenBlock`` is the state of the block being filled: what its seal will say, and what the latest seal still
owes the store (``SealDebt``). The ledger decides when a block is due and adopts a seal once it is committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

from lineage_ledger.core import smt
from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.entry import (
    BLOCKS_SUBJECT,
    ZERO_HASH,
    BlockHeader,
    SealEntry,
    decode_entry,
    header_hash,
    seal_entry_bytes,
)
from lineage_ledger.core.merkle import CompactRange, NodeVisitor, leaf_hash, root_of
from lineage_ledger.core.note import Checkpoint, sign_note
from lineage_ledger.core.receipt import Promise, PromisedRange
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.completeness import MapReader, block_heads, encode_node, map_changes, unwritten_map
from lineage_ledger.ledger.links import Link, entry_links
from lineage_ledger.store.base import BatchWrite, CheckpointRow, EntryRow, Store

__all__ = ["DEBT_SLICE_MIN", "OpenBlock", "Seal", "SealDebt", "sign_promise"]

DEBT_SLICE_MIN: Final = 256
"""Owed rows (SealDebt) written with a commit after a seal: at least this many."""


def sign_promise(
    origin: str, rows: Sequence[EntryRow], tree_root: bytes, last_recorded: str, seconds: float, signer: Signer
) -> PromisedRange:
    """The log key's signed promise that ``rows`` (the tree then having root ``tree_root``) will be covered by
    a signed checkpoint by ``seconds`` after ``last_recorded``."""
    leaves = [row.leaf for row in rows]
    deadline_ns = int(last_recorded.split(".", 1)[0]) + int(seconds * 1e9)
    promise = Promise(
        log=origin,
        first=rows[0].index,
        count=len(rows),
        leaves_root=root_of(leaves),
        tree_root=tree_root,
        deadline=f"{deadline_ns:019d}.00000",
    )
    return PromisedRange.create(promise, leaves, signer)


class SealDebt:
    """What the latest seal still owes the store: its block's lineage links and subject-map nodes.

    Written in the seal's own commit, they made it the slowest commit by far (a block's links land on a page
    per distinct key, and the nodes on a page per random hash): every event waiting behind it waited for
    all of them. So they are written a slice with each commit after the seal instead, sorted so a slice
    touches neighbouring pages, the map root last, and whatever is left goes with the next seal. A stored
    root therefore means the block's links and nodes are all stored; until it is, readers derive them from
    the block's entries (ledger.links, completeness.unwritten_map), and so does a writer opening the ledger.

    Sorting waits for the first slice (the seal's own append is the one every queued event waits for), and
    the slices are sized so the debt is paid over about half a block (``slice_for``).
    """

    __slots__ = ("link_pos", "links", "node_of", "node_pos", "nodes", "root", "sorted", "total")

    def __init__(self, links: list[Link], nodes: dict[bytes, smt.Leaf | smt.Interior], root: bytes) -> None:
        self.links = links
        self.node_of = nodes
        self.nodes: list[bytes] = []
        self.root = root
        self.sorted = False
        self.total = len(links) + len(nodes)
        self.link_pos = 0
        self.node_pos = 0

    def __len__(self) -> int:
        return self.total - self.link_pos - self.node_pos

    def slice_for(self, entries: int, block_size: int) -> int:
        """How many owed rows go with a commit of ``entries`` entries: enough to pay the whole debt over half a
        block's worth of entries, and at least DEBT_SLICE_MIN."""
        return max(DEBT_SLICE_MIN, -(-2 * self.total * entries // max(block_size, 1)))

    def slice(self, batch: BatchWrite, count: int) -> tuple[int, int]:
        """Put the next ``count`` owed rows (links first) into ``batch``; returns the positions to
        :meth:`advance` to once the batch is committed."""
        if not self.sorted:  # by kind and key only: that is what puts neighbouring rows on one page
            self.links.sort(key=_link_page)
            self.nodes = sorted(h for h in self.node_of if h != self.root)  # encoded a slice at a time
            if self.root in self.node_of:
                self.nodes.append(self.root)
            self.sorted = True
        links_end = min(len(self.links), self.link_pos + count)
        batch.links.extend(self.links[self.link_pos : links_end])
        count -= links_end - self.link_pos
        nodes_end = min(len(self.nodes), self.node_pos + max(count, 0))
        node_of = self.node_of
        batch.map_nodes.extend((h, encode_node(node_of[h])) for h in self.nodes[self.node_pos : nodes_end])
        return links_end, nodes_end

    def advance(self, to: tuple[int, int]) -> None:
        """Mark the rows up to ``to`` (from :meth:`slice`) as written."""
        self.link_pos, self.node_pos = to


def _link_page(link: Link) -> str:
    return link[0] + "\x00" + link[1]


class Seal(NamedTuple):
    """A seal ready to commit: its entry, its signed checkpoint, the block header it records, and the subject
    map's new nodes."""

    row: EntryRow
    checkpoint: CheckpointRow
    header: BlockHeader
    map_nodes: dict[bytes, smt.Leaf | smt.Interior]


class OpenBlock:
    """The block being filled, read from the store: its number and first index, the previous block's header
    hash and seal entry, the subject map's root, the chain heads the block changed (for the next map), its
    links (written after its seal), the tree of its entries, its first recorded_at, and the latest seal's debt.
    """

    __slots__ = (
        "debt",
        "first",
        "hlc_first",
        "map_reader",
        "map_root",
        "number",
        "pending_links",
        "prev_header",
        "seal_head",
        "started",
        "touched",
        "tree",
    )

    def __init__(self, store: Store, size: int, started: float) -> None:
        """The open block of the log of ``size`` entries in ``store``, taken to have started at ``started``
        (on the ledger's monotonic clock)."""
        seals = store.subject_entries([BLOCKS_SUBJECT])
        self.seal_head = ZERO_HASH
        self.number = 0
        self.prev_header = ZERO_HASH
        self.first = 0
        self.map_root = smt.EMPTY
        self.map_reader = MapReader(store)
        self.debt: SealDebt | None = None
        if seals:
            last = seals[-1]
            seal = decode_entry(last.body)
            assert isinstance(seal, SealEntry)
            self.seal_head = last.leaf
            self.number = seal.block.number + 1
            self.prev_header = header_hash(seal.block)
            self.first = seal.index + 1
            self.map_root = bytes.fromhex(seal.block.subjects_root)
            owed = unwritten_map(store, last.index, seal, self.map_reader)
            if owed:  # the writer stopped before the seal's links and map nodes were all written
                self.debt = SealDebt(entry_links(store.entries(seal.block.first, last.index)), owed, self.map_root)
        # chain heads changed since the last seal, for the next seal's subject map
        self.touched: dict[str, tuple[bytes, int, int]] = block_heads(store, self.first, size)
        # the open block's links are written after its seal (ledger.links): until then they are derived
        self.pending_links: list[Link] = entry_links(store.entries(self.first, size))
        self.tree = CompactRange()
        self.tree.append_many(store.leaf_hashes(self.first, size - self.first))
        self.hlc_first = decode_entry(store.entry(self.first).body).recorded_at if size > self.first else ""
        self.started = started

    def seal(
        self,
        tree: CompactRange,
        block: CompactRange,
        size: int,
        hlc_first: str,
        hlc_last: str,
        visit: NodeVisitor,
        touched: dict[str, tuple[bytes, int, int]],
        *,
        origin: str,
        signer: Signer,
        now: Callable[[], str],
        sealed_size: int,
    ) -> Seal:
        """Seal the block whose entries' tree is ``block``, ending at the log of ``size`` entries whose tree is
        ``tree`` (the seal entry is appended to it, ``visit`` hearing of its nodes): the subject map updated
        with ``touched``, the header, the seal entry (recorded at ``now()``) and the checkpoint ``signer``
        signs. Changes nothing here; LedgerError if the checkpoint would not extend ``sealed_size``."""
        changes = map_changes((subject, *head) for subject, head in touched.items())
        self.map_reader.prefetch(self.map_root, changes)
        map_root, map_nodes = smt.update(self.map_root, changes, self.map_reader, checked_reader=True)
        header = BlockHeader(
            number=self.number,
            first=self.first,
            last=size - 1,
            root=block.root().hex(),
            prev_header=self.prev_header.hex(),
            hlc_first=hlc_first,
            hlc_last=hlc_last,
            subjects_root=map_root.hex(),
        )
        recorded = now()
        body = seal_entry_bytes(index=size, recorded_at=recorded, prev=self.seal_head, header=header)
        leaf = leaf_hash(body)
        tree.append(leaf, visit)
        if size + 1 <= sealed_size:
            raise LedgerError("refusing to sign a checkpoint that does not extend the last one")
        text = Checkpoint(origin=origin, size=size + 1, root_hash=tree.root(), extensions=()).to_text()
        note = sign_note(text, [signer])
        row = EntryRow(size, BLOCKS_SUBJECT, None, None, self.seal_head, leaf, "ok", body)
        return Seal(row, CheckpointRow(size + 1, note), header, map_nodes)

    def adopt(self, seal: Seal, owed_links: list[Link] | None, started: float) -> None:
        """Start the next block after the committed ``seal``. Given ``owed_links``, the seal's links and map
        nodes are still to be written (SealDebt); otherwise they were written with it."""
        row, _, header, map_nodes = seal
        self.map_root = bytes.fromhex(header.subjects_root)
        self.map_reader.release()  # the previous seal's debt was paid with this commit at the latest
        if owed_links is None:
            self.map_reader.add(map_nodes)
            self.debt = None
        else:
            self.map_reader.hold(map_nodes)
            self.debt = SealDebt(owed_links, map_nodes, self.map_root)
        self.touched = {}
        self.pending_links = []
        self.seal_head = row.leaf
        self.prev_header = header_hash(header)
        self.number = header.number + 1
        self.first = row.index + 1
        self.tree = CompactRange()
        self.hlc_first = ""
        self.started = started

"""A vectorized open-addressing hash index from 64-bit device keys to dense row numbers.

Device keys are already uniformly distributed (keyed SipHash), so the low bits are the home slot.
Lookups and inserts run on whole batches: the first probe reads every key's home slot at once,
then the keys not settled there read several slots per round (linear probing, wider windows as
fewer keys are left, so a long chain costs few rounds). A batch's new keys are sorted once and
numbered in that order, so row numbers never depend on the slot layout; new keys claim the
first empty slot from their home by a scatter read back. The slot table holds int32 row numbers
(4 bytes per slot, load factor kept in [0.35, 0.7]), and keys live densely in ``keys``, so the
index costs about 8-11 bytes per device on top of the state arrays it indexes.

Rows are dropped only all at once, by :meth:`DeviceIndex.compact` (eviction of devices no figure
can use any more, reclaiming of cells no device references): the kept rows are renumbered
densely, in their order, and the slot table is rebuilt.
"""

from __future__ import annotations

import numpy as np


def mix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finalizer of every value (uint64 → uint64, bijective): spreads keys whose
    low bits are constant (H3 cells below their resolution, small row numbers) over all bits."""
    x = np.asarray(x).astype(np.uint64, copy=True)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x

EMPTY = -1
PROBE_WINDOW = 4
"""Slots a probe past the home slot reads at once, at least (:meth:`DeviceIndex._window`)."""
PROBE_BUDGET = 2048
"""Slots a probing round reads in all, about, once few keys are left."""
MAX_WINDOW = 64
MAX_LOAD = 0.7
GROWTH = 1.25


class DeviceIndex:
    """Maps uint64 device keys to dense rows ``0..n-1``, inserting unseen keys on lookup."""

    def __init__(self, capacity: int = 1024) -> None:
        slots = 1 << max(4, int(np.ceil(np.log2(max(capacity, 1) / MAX_LOAD))))
        self._slots = np.full(slots, EMPTY, dtype=np.int32)
        self.keys = np.zeros(max(capacity, 16), dtype=np.uint64)
        self.n = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the index (slot table and dense key array)."""
        return int(self._slots.nbytes + self.keys.nbytes)

    def _reserve_rows(self, extra: int) -> None:
        need = self.n + extra
        if need > len(self.keys):
            grown = np.zeros(max(need, int(len(self.keys) * GROWTH) + 16), dtype=np.uint64)
            grown[: self.n] = self.keys[: self.n]
            self.keys = grown
        self._reserve_slots(need)

    def _reserve_slots(self, need: int) -> None:
        if need > MAX_LOAD * len(self._slots):
            size = len(self._slots)
            while need > MAX_LOAD * size:
                size *= 2
            self._slots = np.full(size, EMPTY, dtype=np.int32)
            self._place(np.arange(self.n, dtype=np.int32))

    def _place(self, rows: np.ndarray) -> None:
        """Insert rows whose keys are known to be distinct and absent (used when rehashing)."""
        rows = np.asarray(rows, dtype=np.int32)
        self._claim(self.keys[rows], rows)

    def _window(self, pending: int) -> int:
        """Slots to read at once per pending key: :data:`PROBE_WINDOW`, more as fewer keys are
        left (about :data:`PROBE_BUDGET` slots a round, at most :data:`MAX_WINDOW`), so a long
        probe chain costs few rounds."""
        wide = min(MAX_WINDOW, PROBE_BUDGET // max(pending, 1))
        return int(min(len(self._slots), max(PROBE_WINDOW, wide)))

    def _claim(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Put ``rows`` (int32) in the slot table for ``keys`` (distinct, not in it): each key
        takes the first empty slot from its home, found :meth:`_window` slots at a time and
        claimed by a scatter read back (keys racing for a slot: one wins, the others probe on
        past it)."""
        slots = self._slots
        mask = len(slots) - 1
        pos = (keys & np.uint64(mask)).astype(np.intp)
        todo = np.arange(keys.size)
        while todo.size:
            w = self._window(todo.size)
            at = pos[todo]
            empty = slots.take((at[:, None] + np.arange(w, dtype=np.intp)) & mask) == EMPTY
            first = empty.argmax(axis=1)
            some = np.flatnonzero(empty[np.arange(todo.size), first])
            pos[todo] = at + w  # no empty slot in the window: on past it
            target = (at[some] + first[some]) & mask
            mine = rows[todo[some]]
            slots[target] = mine
            won = slots.take(target) == mine
            pos[todo[some]] = target + 1  # lost the race: on past the winner
            keep = np.ones(todo.size, dtype=bool)
            keep[some[won]] = False
            todo = todo[keep]

    def load(self, keys: np.ndarray) -> np.ndarray:
        """Fill an empty index with ``keys`` (distinct) as rows ``0..n-1`` in their order: a
        restored state keeps the row order it was written in. Returns the rows (int32).
        Raises ``ValueError`` when the index is not empty or the keys repeat."""
        keys = np.asarray(keys, dtype=np.uint64)
        if self.n:
            raise ValueError("load needs an empty index")
        ordered = np.sort(keys)
        if ordered.size and (ordered[1:] == ordered[:-1]).any():
            raise ValueError("load: the keys repeat")
        self._reserve_rows(keys.size)
        self.keys[: keys.size] = keys
        self.n = keys.size
        rows = np.arange(keys.size, dtype=np.int32)
        self._place(rows)
        return rows

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Row of every key (int64), -1 for keys not in the index; inserts nothing. Keys may
        repeat. The first probe runs on the whole batch without indirection (most keys end
        there); the keys whose home slot holds another key then read :meth:`_window` slots at
        a time (a probe ends at the key or at an empty slot)."""
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) == 0 or self.n == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        slots, held = self._slots, self.keys
        mask = len(slots) - 1
        pos = (keys & np.uint64(mask)).astype(np.intp)
        out = slots.take(pos).astype(np.int64)
        occupied = out != EMPTY
        hit = held.take(out) == keys  # an empty slot (-1) reads a spare key: masked below
        hit &= occupied
        out[~hit] = -1
        todo = np.flatnonzero(occupied & ~hit)
        base, want = pos[todo] + 1, keys[todo]
        while todo.size:
            w = self._window(todo.size)
            s = slots.take((base[:, None] + np.arange(w, dtype=np.intp)) & mask).astype(np.int64)
            empty = s == EMPTY
            match = held.take(s) == want[:, None]
            match &= ~empty
            stop = match | empty
            first = stop.argmax(axis=1)
            i = np.arange(todo.size)
            found = np.flatnonzero(match[i, first])
            out[todo[found]] = s[found, first[found]]
            go = ~stop[i, first]
            todo, base, want = todo[go], base[go] + w, want[go]
        return out

    def insert(self, keys: np.ndarray) -> np.ndarray:
        """Add distinct keys the index does not hold as rows ``n..n+m-1``, in their order;
        returns those rows (int32). Where each key's slot ends up (:meth:`_claim`) changes no
        row number. Keys that repeat or are held already break the index."""
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        m = keys.size
        self._reserve_rows(m)
        new = np.arange(self.n, self.n + m, dtype=np.int32)
        self.keys[self.n:self.n + m] = keys
        self.n += m
        self._claim(keys, new)
        return new

    def compact(self, keep: np.ndarray) -> np.ndarray:
        """Keep the rows where ``keep`` (bool[n]) is set, renumbered ``0..`` in their order.

        Returns the kept rows' old numbers (int64, ascending): callers take their parallel
        arrays with it. Capacity shrinks when less than half of it is in use.
        """
        kept = np.flatnonzero(np.asarray(keep, dtype=bool)[: self.n])
        n = kept.size
        cap = len(self.keys) if 2 * n >= len(self.keys) else max(int(n * GROWTH) + 16, 16)
        keys = np.zeros(cap, dtype=np.uint64)
        keys[:n] = self.keys[kept]
        self.keys, self.n = keys, n
        slots = 1 << max(4, int(np.ceil(np.log2(max(cap, 1) / MAX_LOAD))))
        self._slots = np.full(slots, EMPTY, dtype=np.int32)
        self._place(np.arange(n, dtype=np.int32))
        return kept

    def rows(self, keys: np.ndarray) -> tuple[np.ndarray, int]:
        """Row of every key (int64), inserting unseen keys; also returns the row count before.

        Rows ``>= n_before`` are devices seen for the first time in this batch: they are
        numbered in ascending key order (a function of the batch's keys only, whatever the
        slot layout). Held keys are found by :meth:`lookup`, the new ones sorted once and
        added by :meth:`insert`.
        """
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        n_before = self.n
        out = self.lookup(keys)
        miss = np.flatnonzero(out < 0)
        if miss.size:
            new, inverse = np.unique(keys[miss], return_inverse=True)
            out[miss] = self.insert(new)[inverse.reshape(-1)]
        return out, n_before

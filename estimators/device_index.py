"""A vectorized open-addressing hash index from 64-bit device keys to dense row numbers.

Device keys are already uniformly distributed (keyed SipHash), so the low bits are the home slot.
Lookups and inserts run on whole batches: each round gathers the slot of every pending key,
resolves matches, claims empty slots for new keys (one winner per slot per round) and moves
collided keys one slot on (linear probing). The slot table holds int32 row numbers (4 bytes per
slot, load factor kept in [0.35, 0.7]), and keys live densely in ``keys``, so the index costs
about 8-11 bytes per device on top of the state arrays it indexes.

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
"""Slots :meth:`DeviceIndex.lookup` reads at once for a key not in its home slot."""
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
        mask = np.uint64(len(self._slots) - 1)
        pos = (self.keys[rows] & mask).astype(np.int64)
        todo = np.arange(len(rows))
        while todo.size:
            p = pos[todo]
            free = self._slots[p] == EMPTY
            cand = todo[free]
            _, first = np.unique(p[free], return_index=True)
            won = cand[first]
            self._slots[pos[won]] = rows[won]
            lost = np.ones(todo.size, dtype=bool)
            lost[np.flatnonzero(free)[first]] = False
            todo = todo[lost]
            occupied = self._slots[pos[todo]] != EMPTY
            pos[todo[occupied]] = (pos[todo[occupied]] + 1) & int(mask)

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
        there); the keys whose home slot holds another key then read :data:`PROBE_WINDOW`
        slots at a time (a probe ends at the key or at an empty slot)."""
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) == 0 or self.n == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        mask = len(self._slots) - 1
        pos = (keys & np.uint64(mask)).astype(np.intp)
        s = self._slots.take(pos)
        occupied = s != EMPTY
        hit = self.keys.take(s) == keys  # an empty slot (-1) reads a spare key: masked below
        hit &= occupied
        out = s.astype(np.int64)
        out[~hit] = -1
        todo = np.flatnonzero(occupied & ~hit)
        if todo.size:
            step = np.arange(1, PROBE_WINDOW + 1, dtype=np.intp)
            base, want = pos[todo], keys[todo]
            while todo.size:
                s = self._slots.take((base[:, None] + step) & mask)
                empty = s == EMPTY
                match = self.keys.take(s) == want[:, None]
                match &= ~empty
                stop = match | empty
                first = stop.argmax(axis=1)
                ended = stop.any(axis=1)
                found = np.flatnonzero(match[np.arange(todo.size), first])
                out[todo[found]] = s[found, first[found]]
                todo, base, want = todo[~ended], base[~ended] + PROBE_WINDOW, want[~ended]
        return out

    def insert(self, keys: np.ndarray) -> np.ndarray:
        """Add distinct keys the index does not hold as rows ``n..n+m-1``, in their order;
        returns those rows (int32). For indexes whose slot layout nobody reads (lookups find
        the same rows whatever it is): each key takes the first empty slot from its home, found
        :data:`PROBE_WINDOW` slots at a time and claimed by a scatter read back (keys racing
        for a slot: one wins, the others probe on), so the layout may differ from what
        :meth:`rows` builds, whose new rows also depend on it. Keys that repeat or are held
        already break the index."""
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        m = keys.size
        self._reserve_rows(m)
        new = np.arange(self.n, self.n + m, dtype=np.int32)
        self.keys[self.n:self.n + m] = keys
        self.n += m
        mask = len(self._slots) - 1
        pos = (keys & np.uint64(mask)).astype(np.intp)
        step = np.arange(PROBE_WINDOW, dtype=np.intp)
        todo = np.arange(m)
        while todo.size:
            at = pos[todo]
            empty = self._slots.take((at[:, None] + step) & mask) == EMPTY
            some = np.flatnonzero(empty.any(axis=1))
            pos[todo] = at + PROBE_WINDOW  # no empty slot in the window: on past it
            target = (at[some] + empty[some].argmax(axis=1)) & mask
            mine = new[todo[some]]
            self._slots[target] = mine
            won = self._slots.take(target) == mine
            pos[todo[some]] = target + 1  # lost the race: on past the winner
            keep = np.ones(todo.size, dtype=bool)
            keep[some[won]] = False
            todo = todo[keep]
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
        """Row of every key (int32), inserting unseen keys; also returns the row count before.

        Rows ``>= n_before`` are devices seen for the first time in this batch.
        """
        keys = np.asarray(keys, dtype=np.uint64)
        n_before = self.n
        if len(keys) == 0:
            return np.empty(0, dtype=np.int32), n_before
        self._reserve_rows(0)
        mask = len(self._slots) - 1
        pos = (keys & np.uint64(mask)).astype(np.intp)
        # first probe for the whole batch without indirection: most keys are found right here
        s = self._slots[pos]
        hit = (s != EMPTY) & (self.keys[s] == keys)
        out = s
        todo = np.flatnonzero(~hit)
        while todo.size:
            p = pos[todo]
            s = self._slots[p]
            occupied = s != EMPTY
            hit = np.zeros(todo.size, dtype=bool)
            hit[occupied] = self.keys[s[occupied]] == keys[todo[occupied]]
            out[todo[hit]] = s[hit]
            free = ~occupied
            if free.any():
                fi = np.flatnonzero(free)
                _, first = np.unique(p[fi], return_index=True)
                winners = todo[fi[first]]
                if self.n + len(winners) > MAX_LOAD * len(self._slots):
                    self._reserve_slots(self.n + len(todo))
                    mask = len(self._slots) - 1
                    todo = todo[~hit]
                    pos[todo] = (keys[todo] & np.uint64(mask)).astype(np.int64)
                    continue
                self._reserve_rows(len(winners))
                new_rows = np.arange(self.n, self.n + len(winners), dtype=np.int32)
                self.keys[new_rows] = keys[winners]
                self._slots[pos[winners]] = new_rows
                self.n += len(winners)
            collided = occupied & ~hit
            pos[todo[collided]] = (p[collided] + 1) & mask
            todo = todo[~hit]
        return out, n_before

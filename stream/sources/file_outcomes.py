"""What became of each ping file's rows in a replay or calibrate: read, and rejected by reason.

The run's summary line counts rows over all its files, so a file rejected whole (an operator's
export with times in seconds, another column layout) hides among the others' accepted pings, and
every figure is short by its devices. :class:`FileOutcomes` counts per file and words one warning
line for each file that lost a noticeable share of its rows, naming its main reason and that
reason's first detail (which says how to fix the usual causes, e.g. times in seconds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from stream.contract import Reject

WARN_SHARE = 0.1
"""A file with at least this share of its rows rejected gets a warning line of its own."""


class FileOutcomes:
    """Per-file counts of a run over ``paths`` (in the order the reader numbers them).

    :meth:`count_read` takes each chunk's ``file`` column and length (the index of every row's file);
    :meth:`wrap` puts the counting of rejects (by the ``FILE:LINE`` of their source) before
    the run's own reject handler."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [str(p) for p in paths]
        self._index = {p: i for i, p in enumerate(self.paths)}
        self.read = np.zeros(len(self.paths), dtype=np.int64)
        self.rejected: list[Counter[str]] = [Counter() for _ in self.paths]
        self._first_detail: list[dict[str, str]] = [{} for _ in self.paths]

    def count_read(self, file: np.ndarray | int, n: int) -> None:
        """Count a chunk's ``n`` rows (``file``: ``int[n]``, each row's index into ``paths``, or
        one index for them all)."""
        self.read += self._per_file(file, n)

    def count_outside(self, file: np.ndarray | int, rows: np.ndarray) -> None:
        """Take the rows ``rows`` of a chunk (whose rows' files are ``file``, as for
        :meth:`count_read`) back out of the rows read: valid pings outside ``--from``/``--to``,
        which are not rejects and must not dilute a file's share of them."""
        self.read -= self._per_file(file, rows.size, rows)

    def _per_file(self, file: np.ndarray | int, n: int, rows: np.ndarray | None = None
                  ) -> np.ndarray:
        """How many of a chunk's ``n`` rows (those at ``rows``, or all) each file holds
        (``file`` as for :meth:`count_read`)."""
        if isinstance(file, (int, np.integer)):
            out = np.zeros(len(self.paths), dtype=np.int64)
            out[int(file)] = n
            return out
        picked = np.asarray(file, dtype=np.int64)
        return np.bincount(picked if rows is None else picked[rows], minlength=len(self.paths))

    def wrap(self, on_reject: Callable[[Reject], None]) -> Callable[[Reject], None]:
        """``on_reject`` with each reject counted against its file first."""
        def counted(reject: Reject) -> None:
            self._count(reject)
            on_reject(reject)

        return counted

    def _count(self, reject: Reject) -> None:
        path, _, line = reject.source.rpartition(":")
        i = self._index.get(path) if line.isdigit() else None
        if i is None:
            return
        self.rejected[i][reject.reason] += 1
        self._first_detail[i].setdefault(reject.reason, reject.detail)

    def all_rejected(self) -> list[str]:
        """The files whose every row read was rejected (none counted when none was read)."""
        return [p for i, p in enumerate(self.paths)
                if self.read[i] > 0 and sum(self.rejected[i].values()) >= self.read[i]]

    def main_reason(self) -> str:
        """``"first REASON: DETAIL"`` of the reason that rejected the most rows over all files
        (``""`` when none was rejected)."""
        total: Counter[str] = sum(self.rejected, Counter())
        if not total:
            return ""
        top, _ = total.most_common(1)[0]
        detail = next(d[top] for d in self._first_detail if top in d)
        return f"first {top}: {detail}"

    def warnings(self) -> list[str]:
        """One line per file with :data:`WARN_SHARE` or more of its rows rejected: how many,
        the reasons, and the main reason's first detail; in file order."""
        out = []
        for i, path in enumerate(self.paths):
            n_read, bad = int(self.read[i]), self.rejected[i]
            n_bad = sum(bad.values())
            if n_read == 0 or n_bad < WARN_SHARE * n_read:
                continue
            top, _ = bad.most_common(1)[0]
            reasons = ", ".join(f"{k} {v:,}" for k, v in bad.most_common())
            how_many = (f"all its {n_read:,} rows" if n_bad >= n_read else
                        f"{n_bad:,} of its {n_read:,} rows ({n_bad / n_read:.0%})")
            out.append(f"{path}: {how_many} rejected ({reasons}), missing from every figure; "
                       f"first {top}: {self._first_detail[i][top]}")
        return out

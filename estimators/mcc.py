"""The country of a SIM: its home network's mobile country code (MCC, ITU-T E.212) to an
ISO 3166-1 alpha-2 code, for whole columns.

The table is many-to-one (310-316 are all ``US``, 234 and 235 ``GB``); an MCC it does not list,
an unknown ``home_mcc`` (-1) and anything outside 0..999 map to :data:`UNKNOWN` (``XX``, as
multimno does). The table itself is data: :mod:`stream.sources.mcc_table` loads the one defacto
ships (or another file) and builds a :class:`CountryTable`; this module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

UNKNOWN = "XX"
"""The country of an MCC that is unknown or not in the table (international networks too)."""
N_MCC = 1000
_ISO2 = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True, eq=False)
class CountryTable:
    """MCC → country lookup.

    ``countries``: the ISO 3166-1 alpha-2 codes, sorted, :data:`UNKNOWN` included (a country's
    *index* is its position here, stable for a given table); ``by_mcc``: int16[1000], the
    country index of every MCC (``XX``'s index where the table has none).
    """

    countries: tuple[str, ...]
    by_mcc: np.ndarray = field(repr=False)

    @classmethod
    def from_pairs(cls, mcc: Sequence[int], iso2: Sequence[str]) -> CountryTable:
        """A table from parallel MCCs (0..999, each at most once) and ISO codes (two capital
        letters). Raises ``ValueError`` naming the first bad pair."""
        if len(mcc) != len(iso2):
            raise ValueError("mcc and iso2 differ in length")
        seen: set[int] = set()
        for m, c in zip(mcc, iso2, strict=True):
            if isinstance(m, bool) or not isinstance(m, int | np.integer) or not 0 <= m < N_MCC:
                raise ValueError(f"MCC must be an integer 0..999, got {m!r}")
            if not isinstance(c, str) or not _ISO2.fullmatch(c):
                raise ValueError(f"MCC {m:03d}: country must be two capital letters, got {c!r}")
            if int(m) in seen:
                raise ValueError(f"MCC {m:03d} is listed twice")
            seen.add(int(m))
        countries = tuple(sorted({*iso2, UNKNOWN}))
        index = {c: i for i, c in enumerate(countries)}
        by_mcc = np.full(N_MCC, index[UNKNOWN], dtype=np.int16)
        by_mcc[np.asarray(mcc, dtype=np.int64)] = [index[c] for c in iso2]
        by_mcc.setflags(write=False)
        return cls(countries, by_mcc)

    @property
    def unknown(self) -> int:
        """Index of :data:`UNKNOWN`."""
        return self.countries.index(UNKNOWN)

    def index_of(self, home_mcc: np.ndarray | Sequence[int]) -> np.ndarray:
        """Country index (int16) of each ``home_mcc``; unknown (-1), unlisted or out-of-range
        codes get :data:`UNKNOWN`'s."""
        mcc = np.asarray(home_mcc, dtype=np.int64)
        valid = (mcc >= 0) & (mcc < N_MCC)
        return np.where(valid, self.by_mcc[np.where(valid, mcc, 0)], self.unknown).astype(np.int16)

    def codes(self, home_mcc: np.ndarray | Sequence[int]) -> np.ndarray:
        """ISO code (``<U2``) of each ``home_mcc``."""
        return np.asarray(self.countries, dtype="<U2")[self.index_of(home_mcc)]

    def mccs_of(self, country: str) -> list[int]:
        """The MCCs of a country (empty for ``XX`` and unknown codes)."""
        if country == UNKNOWN or country not in self.countries:
            return []
        return np.flatnonzero(self.by_mcc == self.countries.index(country)).tolist()

"""``estimate_foreign(..., measures=...)`` gives the same figures as the full estimate for the
measures asked (a snapshot's long-stayers line asks for ``usual_resident`` only), and the
country rollup sums exactly as adding every country into its row would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from estimators.foreign import (
    CUBE_FIELDS,
    PLANE_FIELDS,
    ForeignFigureConfig,
    ForeignPeriod,
    _rollup,
    estimate_foreign,
    shown_countries,
)
from estimators.mcc import CountryTable
from estimators.regions import regions_from_geojson

TABLE = CountryTable.from_pairs([401, 434, 437, 250, 310, 311, 460],
                                ["KZ", "UZ", "KG", "RU", "US", "US", "CN"])


def _random_period(n_regions: int, seed: int) -> ForeignPeriod:
    rng = np.random.default_rng(seed)
    p = ForeignPeriod("month", 2026 * 12 + 2, len(TABLE.countries), n_regions,
                      last_night=20_000 + 29, first_night=20_000 - 1)
    for name in CUBE_FIELDS + PLANE_FIELDS:
        a = getattr(p, name)
        a[...] = rng.integers(0, 40, a.shape) * (rng.random(a.shape) < 0.6)
    return p


@pytest.mark.parametrize("seed", range(6))
def test_a_subset_of_measures_is_the_full_estimate_restricted(regions_doc: dict[str, Any],
                                                               seed: int) -> None:
    regions = regions_from_geojson(regions_doc)
    p = _random_period(len(regions.ids), seed)
    config = ForeignFigureConfig(top_countries=1 + seed % 3)
    full = estimate_foreign(p, TABLE.countries, regions, config=config)
    for name in ("usual_resident", "stock"):
        part = estimate_foreign(p, TABLE.countries, regions, config=config, measures=(name,))
        assert set(part.figures) == {name}
        assert part.countries == full.countries
        for got, want in zip(vars(part.figures[name]).values(), vars(full.figures[name]).values(),
                             strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_rollup_sums_every_country_into_its_row(seed: int) -> None:
    p = _random_period(5, seed)
    codes = list(TABLE.countries)
    shown = shown_countries(p, codes, ForeignFigureConfig(top_countries=seed))
    row, rolled = _rollup(p, codes, shown)
    for name in CUBE_FIELDS + PLANE_FIELDS:
        want = np.zeros((len(shown) + 1, *getattr(p, name).shape[1:]), dtype=np.int64)
        np.add.at(want, row, getattr(p, name))
        np.testing.assert_array_equal(rolled[name], want)
        assert rolled[name].dtype == np.int64

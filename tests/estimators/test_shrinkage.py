"""Small-area shrinkage of calibration factors (Fay-Herriot): pools what the reference's noise
explains, keeps what the data say differs, keeps every parent's total."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators.calibration import ANY, FactorRow, fay_herriot, shrink_factors
from estimators.regions import Region, RegionSet

DISTRICTS = [f"d{i}" for i in range(6)]


def _square(k: int) -> tuple[np.ndarray, ...]:
    lon0 = 70.0 + 0.1 * k
    return (np.array([[lon0, 51.0], [lon0 + 0.1, 51.0], [lon0 + 0.1, 51.1], [lon0, 51.1],
                      [lon0, 51.0]]),)


def _regions() -> RegionSet:
    """A city of six districts and a rural region beside it (its own top-level region)."""
    city = Region("city", "city", None, True, _square(0))
    districts = [Region(d, d, "city", True, _square(k)) for k, d in enumerate(DISTRICTS)]
    return RegionSet([city, *districts, Region("rural", "rural", None, False, _square(10))])


def _rows(people: dict[str, float], devices: dict[str, float], rse: float) -> list[FactorRow]:
    """Fitted rows as :func:`fit_factors` writes them (binomial part left out)."""
    return [FactorRow(r, ANY, people[r] / devices[r], rse, people[r]) for r in people]


def _fit(true_factor: np.ndarray, reference_error: np.ndarray, rse: float,
         rural_factor: float = 1.6) -> tuple[list[FactorRow], np.ndarray, np.ndarray]:
    """Districts of 20 000 people with the given true factors; the reference misstates each
    by ``reference_error`` (relative); the city and rural rows are fitted alongside. Returns
    the rows, the true people and the devices per district."""
    true = np.full(len(DISTRICTS), 20_000.0)
    devices = true / true_factor
    ref = true * (1 + reference_error)
    people = dict(zip(DISTRICTS, ref.tolist(), strict=True)) | {
        "city": float(ref.sum()), "rural": 50_000.0}
    dev = dict(zip(DISTRICTS, devices.tolist(), strict=True)) | {
        "city": float(devices.sum()), "rural": 50_000.0 / rural_factor}
    return _rows(people, dev, rse), true, devices


def _district_errors(rows: list[FactorRow], true: np.ndarray, devices: np.ndarray) -> np.ndarray:
    by = {r.region: r.factor for r in rows}
    return devices * np.array([by[d] for d in DISTRICTS]) / true - 1


def test_exact_reference_changes_nothing() -> None:
    rng = np.random.default_rng(1)
    rows, _, _ = _fit(np.full(6, 1.25), rng.normal(0, 0.005, 6), 0.003)
    assert shrink_factors(_regions(), rows, 0.0) == rows


def test_tiny_reference_error_changes_almost_nothing() -> None:
    # true factors 1 % apart, reference error 1e-5: the spread is real, nothing to pool
    rng = np.random.default_rng(2)
    true_factor = 1.25 * (1 + np.linspace(-0.01, 0.01, 6))
    rows, _, _ = _fit(true_factor, rng.normal(0, 1e-5, 6), 1e-5)
    shrunk = shrink_factors(_regions(), rows, 1e-5)
    for before, after in zip(rows, shrunk, strict=True):
        assert after.factor == pytest.approx(before.factor, rel=1e-5)


def test_equal_true_factors_are_pooled_and_errors_shrink() -> None:
    # one factor for all districts: their spread is the reference's noise, and pooling
    # removes most of it (over many reference draws)
    rng = np.random.default_rng(3)
    own, pooled = [], []
    for _ in range(300):
        rows, true, devices = _fit(np.full(6, 1.25), rng.normal(0, 0.005, 6), 0.005)
        own.append(_district_errors(rows, true, devices))
        pooled.append(_district_errors(shrink_factors(_regions(), rows, 0.005), true, devices))
    rms_own = float(np.sqrt(np.mean(np.square(own))))
    rms_pooled = float(np.sqrt(np.mean(np.square(pooled))))
    assert rms_own == pytest.approx(0.005, rel=0.1)
    assert rms_pooled < 0.6 * rms_own


def test_a_district_that_differs_is_kept_apart() -> None:
    # an operator strong in d2: 30 % more devices per person there, so its factor is lower;
    # pooling must not pull it toward the others (nor the rural region toward the city)
    true_factor = np.full(6, 1.25)
    true_factor[2] = 1.25 / 1.3
    rng = np.random.default_rng(4)
    for _ in range(50):
        rows, true, devices = _fit(true_factor, rng.normal(0, 0.005, 6), 0.005)
        shrunk = shrink_factors(_regions(), rows, 0.005)
        err = _district_errors(shrunk, true, devices)
        assert abs(err[2]) < 0.02
        by = {r.region: r for r in shrunk}
        assert by["rural"].factor == pytest.approx(1.6, rel=0.001)
        assert by["d2"].factor < 1.0 < by["d0"].factor


def test_siblings_keep_their_parent_total_and_rse_falls() -> None:
    rng = np.random.default_rng(5)
    rows, _, devices = _fit(np.full(6, 1.25), rng.normal(0, 0.005, 6), 0.005)
    shrunk = shrink_factors(_regions(), rows, 0.005)
    by = {r.region: r for r in shrunk}
    ref_total = sum(r.people for r in rows if r.region in DISTRICTS)  # type: ignore[misc]
    # the districts add up to their summed reference, moved as the city's own factor was
    # (by a hair: the rural factor is far from the city's, so the top level pools nothing)
    city = next(r for r in rows if r.region == "city")
    assert by["city"].factor == pytest.approx(city.factor, rel=1e-3)
    assert float(devices @ [by[d].factor for d in DISTRICTS]) == pytest.approx(
        ref_total * by["city"].factor / city.factor, rel=1e-12)
    assert all(by[d].people == r.people for d, r in zip(DISTRICTS, rows, strict=False))
    assert all(by[d].rse < 0.005 for d in DISTRICTS)   # pooled figures are better known
    assert [r.region for r in shrunk] == [r.region for r in rows]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="shapes"):
        fay_herriot(np.zeros(3), np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="reference > 0"):
        fay_herriot(np.zeros(2), np.full(2, 1e-4), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="reference_rse"):
        shrink_factors(_regions(), [], float("nan"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-1.0, 1.0), st.floats(0.0, 0.05), st.floats(10.0, 1e6)),
                min_size=2, max_size=12))
def test_fay_herriot_moves_each_figure_toward_the_pooled_one(
        groups: list[tuple[float, float, float]]) -> None:
    y, sd, ref = (np.array(c) for c in zip(*groups, strict=True))
    fh = fay_herriot(y, sd**2, ref)
    mu = np.log(ref.sum() / (ref / np.exp(y)).sum())
    assert np.all((fh.weight >= 0) & (fh.weight <= 1))
    assert fh.tau2 >= 0
    # the shrunk figure lies between the region's own figure and the pooled one
    lo, hi = np.minimum(y, mu), np.maximum(y, mu)
    assert np.all((fh.log_factor >= lo - 1e-12) & (fh.log_factor <= hi + 1e-12))
    assert np.all((fh.mse >= 0) & (fh.mse <= sd**2))   # never less certain than unpooled
    # regions with no noise keep their own figure
    exact = sd == 0
    assert np.allclose(fh.log_factor[exact], y[exact])

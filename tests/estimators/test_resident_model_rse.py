"""The resident interval has a model-error term of its own (``resident_model_rse``), apart from
the present interval's ``model_rse`` (docs/METHOD.md §5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from estimators.calibration import Calibration, FactorRow
from estimators.estimate import Estimate, EstimateConfig, estimate_from_tally, tally_state
from estimators.presence import NightWindow, PresenceState
from estimators.regions import regions_from_geojson
from estimators.units import HOUR_MS
from stream.contract import InputError
from stream.estimate.engine_options import EngineOptions

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z (05:00 local at UTC+5)
OFFSET_S = 18_000


def _estimate(regions_doc: dict[str, Any], config: EstimateConfig) -> tuple[Estimate, int]:
    """200 devices in north and 100 in south, each slept in its district last night and pinged
    there 30 min before the estimate; one calibration row of 3 people per device, rse 0. The
    city figures rest on 300 devices of weight 3: 900 people, counting variance 300 * 3 * 2."""
    rs = regions_from_geojson(regions_doc)
    loc_region = np.array([rs.index["north"], rs.index["south"]], dtype=np.int32)
    st = PresenceState(len(rs.ids), NightWindow())
    n = 300
    keys = np.arange(1, n + 1, dtype=np.uint64)
    loc = np.array([0] * 200 + [1] * 100)
    opc = np.zeros(n, np.uint8)
    st.update(keys, np.full(n, T0 - 4 * HOUR_MS), opc, loc, loc_region, OFFSET_S)  # 01:00 local
    at = T0 + 10 * HOUR_MS
    st.update(keys, np.full(n, at - HOUR_MS // 2), opc, loc, loc_region, OFFSET_S)
    factors = Calibration([FactorRow("*", "*", 3.0)]).resolve(rs, ["40101"])
    tally = tally_state(st, np.arange(2, dtype=np.uint64), loc_region, (), at, OFFSET_S, config)
    return estimate_from_tally(tally, rs, factors, config), rs.index["city"]


COUNT_VAR = 300 * 3 * 2


def _model_var(rse: float) -> float:
    """The city's model variance: north's 600 and south's 300 people err independently."""
    return (600 * rse) ** 2 + (300 * rse) ** 2


def test_resident_interval_uses_its_own_model_term(regions_doc: dict[str, Any]) -> None:
    # model_rse alone: the present interval widens, the resident one stays binomial only
    est, c = _estimate(regions_doc, EstimateConfig(model_rse=0.02, resident_model_rse=0.0))
    assert est.present[c] == est.resident[c] == pytest.approx(900)
    assert est.present_hi[c] - est.present[c] == pytest.approx(
        1.645 * np.sqrt(COUNT_VAR + _model_var(0.02)))
    assert est.resident_hi[c] - est.resident[c] == pytest.approx(1.645 * np.sqrt(COUNT_VAR))
    # resident_model_rse alone: the resident interval widens by it, the present one does not
    est, c = _estimate(regions_doc, EstimateConfig(model_rse=0.0, resident_model_rse=0.03))
    assert est.resident_hi[c] - est.resident[c] == pytest.approx(
        1.645 * np.sqrt(COUNT_VAR + _model_var(0.03)))
    assert est.resident[c] - est.resident_lo[c] == pytest.approx(
        1.645 * np.sqrt(COUNT_VAR + _model_var(0.03)))
    assert est.present_hi[c] - est.present[c] == pytest.approx(1.645 * np.sqrt(COUNT_VAR))


def test_resident_model_rse_is_checked_and_reaches_the_engine() -> None:
    with pytest.raises(ValueError, match="model error terms must be >= 0"):
        EstimateConfig(resident_model_rse=-0.001)
    with pytest.raises(InputError, match="--resident-model-rse"):
        EngineOptions(resident_model_rse=1.0)
    cfg = EngineOptions(model_rse=0.02, resident_model_rse=0.004).engine_config().estimate
    assert (cfg.model_rse, cfg.resident_model_rse) == (0.02, 0.004)
    assert EngineOptions().resident_model_rse == EstimateConfig.resident_model_rse

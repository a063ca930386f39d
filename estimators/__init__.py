"""defacto's numerical core: pure, vectorized numpy, no I/O.

The public surface, in the order data meets it::

    from estimators import Engine, EngineConfig, EstimateConfig, NightWindow, RegionSet
    engine = Engine(regions_from_geojson(doc), EngineConfig(res=8))
    engine.ingest(device_key, ts_ms, opclass, loc)     # uint64[n], int64[n] UTC ms, uint8[n], int64[n]
    tally = engine.tally(at_ms)                         # counts only, no device keys; tallies add up
    estimate = engine.estimate_tally(merge_tallies([tally, ...]))

Each module documents its method and sources (``docs/METHOD.md`` has the reasons for each
default). Time constants live in :mod:`estimators.units` only.
"""

from estimators.accuracy import Accuracy, score
from estimators.alerts import GapAlert, gap_crossings, update_gap_alerts
from estimators.calibration import Calibration, FactorMatrix, FactorRow, fit_factors
from estimators.engine import MAX_OPERATORS, Engine, EngineConfig
from estimators.estimate import Estimate, EstimateConfig
from estimators.h3vec import cell_to_parent, latlng_to_cell
from estimators.presence import ROAMER, NightWindow, PresenceState
from estimators.pseudonym import device_keys, load_secret, siphash24
from estimators.regions import UNASSIGNED, Region, RegionSet, regions_from_geojson
from estimators.tally import Tally, merge_tallies
from estimators.units import DAY_MS, EPOCH_MS, HOUR_MS, MINUTE_MS, SECOND_MS

__all__ = [
    "DAY_MS",
    "EPOCH_MS",
    "HOUR_MS",
    "MAX_OPERATORS",
    "MINUTE_MS",
    "ROAMER",
    "SECOND_MS",
    "UNASSIGNED",
    "Accuracy",
    "Calibration",
    "Engine",
    "EngineConfig",
    "Estimate",
    "EstimateConfig",
    "FactorMatrix",
    "FactorRow",
    "GapAlert",
    "NightWindow",
    "PresenceState",
    "Region",
    "RegionSet",
    "Tally",
    "cell_to_parent",
    "device_keys",
    "fit_factors",
    "gap_crossings",
    "latlng_to_cell",
    "load_secret",
    "merge_tallies",
    "regions_from_geojson",
    "score",
    "siphash24",
    "update_gap_alerts",
]

"""The engine's options as one typed, frozen object, and the engine built from them.

Every option a person sets (``--res``, ``--horizon``, ``--night``, ...) lands here once, with its
durations already in ``*_ms``; ``defacto replay``, ``calibrate`` and the worker build their
engines with :func:`build_engine`, so equal options give equal engines everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.migration import MigrationConfig
from estimators.presence import NightWindow
from estimators.units import DAY_MS, HOUR_MS
from stream.contract import InputError
from stream.sources.reference_files import CellPlanRows, Reference


@dataclass(frozen=True)
class EngineOptions:
    """What the engine computes and how (defaults and reasons in ``docs/METHOD.md``).

    ``res``: H3 resolution of cells; ``horizon_ms``: a device is present where its last ping
    within this time was; ``activity_ms``: devices seen within this time are active;
    ``night_start_h``/``night_length_h``: the local night window (hours); ``nights``: residence
    is the modal night region over this many nights, ``min_nights`` of them seen; ``timezone``:
    IANA zone of the nights; ``home_mcc``: domestic SIMs' MCC (others are roamers); ``k``:
    figures resting on fewer devices are suppressed; ``model_rse``: model-error term of the
    interval. Migration (:mod:`estimators.migration`): ``move_window_nights`` (majority window),
    ``move_min_nights`` (nights the new region must hold), ``confirm_nights``, ``lapse_nights``.
    """

    res: int = 8
    horizon_ms: int = 6 * HOUR_MS
    activity_ms: int = DAY_MS
    night_start_h: float = 22.0
    night_length_h: float = 8.0
    nights: int = 7
    min_nights: int = 1
    timezone: str = "Asia/Almaty"
    home_mcc: int = 401
    k: int = 15
    model_rse: float = EstimateConfig.model_rse
    move_window_nights: int = MigrationConfig.window_nights
    move_min_nights: int = MigrationConfig.min_nights
    confirm_nights: int = MigrationConfig.confirm_nights
    lapse_nights: int = MigrationConfig.lapse_nights

    def migration_config(self) -> MigrationConfig:
        """The migration rules; raises :class:`~stream.contract.InputError` when out of range."""
        try:
            return MigrationConfig(window_nights=self.move_window_nights,
                                   min_nights=self.move_min_nights,
                                   confirm_nights=self.confirm_nights,
                                   lapse_nights=self.lapse_nights)
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def engine_config(self) -> EngineConfig:
        """The estimators' configuration; raises :class:`~stream.contract.InputError` naming
        the option that is out of range."""
        try:
            return EngineConfig(
                res=self.res, timezone=self.timezone, home_mcc=self.home_mcc,
                night=NightWindow(self.night_start_h, self.night_length_h, self.nights),
                estimate=EstimateConfig(horizon_ms=self.horizon_ms, activity_ms=self.activity_ms,
                                        min_nights=self.min_nights, k_anonymity=self.k,
                                        model_rse=self.model_rse),
                migration=self.migration_config())
        except ValueError as exc:
            raise InputError(str(exc)) from None


def build_engine(options: EngineOptions, reference: Reference, calibrated: bool = True) -> Engine:
    """A fresh engine for ``reference``'s regions with its cell plan loaded.

    ``calibrated=False`` leaves out the calibration (to fit one). Raises
    :class:`~stream.contract.InputError` for options out of range.
    """
    engine = Engine(reference.regions, options.engine_config(),
                    reference.calibration if calibrated else None)
    if reference.cell_plan is not None:
        load_plan(engine, reference.cell_plan)
    return engine


def load_plan(engine: Engine, plan: CellPlanRows) -> None:
    """Bin a cell plan into ``engine`` (once; cell-id pings then resolve by plan row)."""
    engine.load_cell_plan(plan.operator, plan.cell, plan.lat, plan.lon, plan.azimuth_deg,
                          plan.range_m)

"""The engine's options as one typed, frozen object, and the engine built from them.

Every option a person sets (``--res``, ``--horizon``, ``--night``, ...) lands here once, with its
durations already in ``*_ms``; ``defacto replay``, ``calibrate`` and the worker build their
engines with :func:`build_engine`, so equal options give equal engines everywhere.

Each numeric option's allowed range is stated once, as a :class:`Limit` in a table
(:data:`ENGINE_LIMITS`, :data:`WINDOW_LIMITS`; the worker's and the simulator's tables use the
same class). The command line parses with :meth:`Limit.arg` and the typed configs check again in
``__post_init__`` with :meth:`Limit.check`, so a value out of range is one clear
:class:`~stream.contract.InputError` naming the option, however the config was built.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.footprints import RULES, apply_footprints, plan_footprints
from estimators.foreign import CountryFactor, ForeignConfig, ForeignFigureConfig
from estimators.mcc import CountryTable
from estimators.migration import MigrationConfig
from estimators.presence import NightWindow
from estimators.units import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from stream.contract import InputError
from stream.estimate.footprint_cache import cached_weights
from stream.estimate.windows import WindowSettings
from stream.sources.mcc_table import load_country_factors, load_mcc_table
from stream.sources.reference_files import CellPlanRows, Reference
from stream.timefmt import parse_duration_ms

_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_DECIMAL = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
"""Numbers on the command line: ASCII digits only (``int``/``float`` would take ``١٢`` or
``1_000``); ``nan`` and ``inf`` are not numbers here."""

SHOWN_CHARS = 40
"""At most this many characters of a rejected value are echoed back in an error."""

_DURATION_UNITS = (("d", DAY_MS), ("h", HOUR_MS), ("m", MINUTE_MS), ("s", SECOND_MS), ("ms", 1))


def duration_text(ms: int) -> str:
    """``21_600_000`` → ``6h``: the largest unit that divides ``ms`` exactly (``0`` for 0)."""
    if ms == 0:
        return "0"
    for unit, size in _DURATION_UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _bound(value: float, duration: bool) -> str:
    if duration:
        return duration_text(int(value))
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:g}"


@dataclass(frozen=True)
class Limit:
    """The allowed range of one numeric option, stated once.

    ``option``: the command-line flag (``--res``); ``what``: what the value means, in the field's
    words; ``lo``/``hi``: the bounds (None: none), included unless ``open_lo``/``open_hi``;
    ``integer``: whole numbers only; ``duration``: milliseconds, written as ``90s``, ``6h``, ...
    Every value must be finite (NaN and infinities never pass).
    """

    option: str
    what: str
    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    duration: bool = False
    open_lo: bool = False
    open_hi: bool = False

    def allowed(self) -> str:
        """The range in words: ``an integer 0..15``, ``a number in [0, 1)``, ``a duration 1s..30d``."""
        kind = "an integer" if self.integer else "a duration" if self.duration else "a number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            if (self.integer or self.duration) and not (self.open_lo or self.open_hi):
                return f"{kind} {_bound(lo, self.duration)}..{_bound(hi, self.duration)}"
            return (f"{kind} in {'(' if self.open_lo else '['}{_bound(lo, self.duration)}, "
                    f"{_bound(hi, self.duration)}{')' if self.open_hi else ']'}")
        if lo is not None:
            return f"{kind} {'>' if self.open_lo else '>='} {_bound(lo, self.duration)}"
        if hi is not None:
            return f"{kind} {'<' if self.open_hi else '<='} {_bound(hi, self.duration)}"
        return f"a finite {kind.split()[-1]}"

    def _shown(self, value: Any) -> str:
        if self.duration and isinstance(value, Integral) and not isinstance(value, bool):
            return duration_text(int(value))
        text = value if isinstance(value, str) else repr(value)
        return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``must be an integer 0..15 (H3 resolution), got 16``),
        or None when it is allowed."""
        if self.integer or self.duration:
            ok = isinstance(value, Integral) and not isinstance(value, bool)
        else:
            ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            v = value
            ok = ((self.lo is None or (v > self.lo if self.open_lo else v >= self.lo))
                  and (self.hi is None or (v < self.hi if self.open_hi else v <= self.hi)))
        if ok:
            return None
        return f"must be {self.allowed()} ({self.what}), got {self._shown(value)}"

    def check(self, value: Any) -> Any:
        """``value`` if allowed; else raises :class:`~stream.contract.InputError`
        ``--res must be an integer 0..15 (H3 resolution), got 16``."""
        problem = self.problem(value)
        if problem is not None:
            raise InputError(f"{self.option} {problem}")
        return value

    def arg(self, text: str) -> Any:
        """Parse and check command-line ``text`` (an argparse ``type``); raises
        ``argparse.ArgumentTypeError`` with the allowed range."""
        shown = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."
        try:
            if self.duration:
                value: Any = parse_duration_ms(text)
            elif self.integer:
                value = int(text) if _INTEGER.fullmatch(text) else None
            else:
                value = float(text) if _DECIMAL.fullmatch(text) else None
        except ValueError:  # an integer of more than 4,300 digits
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"must be {self.allowed()} ({self.what}), "
                                             f"got {shown!r}")
        bare = self.duration and _DECIMAL.fullmatch(text.strip()) is not None
        if self.problem(value) is not None:
            unit = "; a number without a unit is seconds (write 10m, 6h, 2d)" if bare else ""
            raise argparse.ArgumentTypeError(
                f"must be {self.allowed()} ({self.what}), got {shown}{unit}")
        if bare:  # in range, but "--horizon 6" most likely meant hours
            n = text.strip()
            print(f"defacto: warning: {self.option} {n} is read as {n} seconds; write {n}m, {n}h "
                  f"or {n}d for minutes, hours or days", file=sys.stderr)
        return value


def check_limits(obj: Any, limits: dict[str, Limit]) -> None:
    """Check every field of ``obj`` named in ``limits`` (None values are not set: skipped)."""
    for name, limit in limits.items():
        value = getattr(obj, name)
        if value is not None:
            limit.check(value)


ENGINE_LIMITS: dict[str, Limit] = {
    "res": Limit("--res", "H3 resolution of cells", 0, 15, integer=True),
    "horizon_ms": Limit("--horizon", "presence horizon, at most --activity", SECOND_MS, 30 * DAY_MS,
                        duration=True),
    "activity_ms": Limit("--activity", "activity window", SECOND_MS, 366 * DAY_MS, duration=True),
    "night_start_h": Limit("--night", "start hour of the local night", 0, 24, open_hi=True),
    "night_length_h": Limit("--night", "length of the local night in hours", 0, 24, open_lo=True,
                            open_hi=True),
    "nights": Limit("--nights", "nights of the residence window", 1, 60, integer=True),
    "min_nights": Limit("--min-nights", "nights seen for a home, at most --nights", 1, 60,
                        integer=True),
    "home_mcc": Limit("--home-mcc", "MCC of domestic SIMs", 0, 999, integer=True),
    "k": Limit("--k", "disclosure threshold in devices", 1, 1_000_000, integer=True),
    "model_rse": Limit("--model-rse", "model-error relative standard error", 0, 1, open_hi=True),
    "away_rse": Limit("--away-rse", "model-error relative standard error of people counted away "
                      "from their home region", 0, 1, open_hi=True),
    "sibling_away_rse": Limit("--sibling-away-rse", "model-error relative standard error of "
                              "people counted away from their home region but within the same "
                              "parent region", 0, 1, open_hi=True),
    "resident_model_rse": Limit("--resident-model-rse", "model-error relative standard error of "
                                "resident figures", 0, 1, open_hi=True),
    "transition_rse": Limit("--transition-rse", "model-error relative standard error of the "
                            "people the stale-mover rule moves", 0, 5),
    "stale_ms": Limit("--stale", "age after which a mover's last ping is stale (10-minute "
                      "steps)", 10 * MINUTE_MS, 30 * DAY_MS, duration=True),
    "routine_ms": Limit("--routine", "how long a device's daytime region stays usable", HOUR_MS,
                        60 * DAY_MS, duration=True),
    "move_window_nights": Limit("--move-window", "nights of the migration majority window", 1, 366,
                                integer=True),
    "move_min_nights": Limit("--move-min-nights", "nights a new region must hold, at most "
                             "--move-window", 1, 366, integer=True),
    "confirm_nights": Limit("--confirm-nights", "nights that confirm a move", 1, 730, integer=True),
    "lapse_nights": Limit("--lapse-nights", "nights without a ping that lapse a SIM", 1, 730,
                          integer=True),
}
"""The range of every numeric :class:`EngineOptions` field (the key is the field's name)."""

WINDOW_LIMITS: dict[str, Limit] = {
    "every_ms": Limit("--every", "snapshot interval", 100, 31 * DAY_MS, duration=True),
    "lateness_ms": Limit("--lateness", "allowed lateness", 0, 7 * DAY_MS, duration=True),
}
"""The range of the :class:`~stream.estimate.windows.WindowSettings` a person sets."""


def check_window_settings(settings: WindowSettings) -> WindowSettings:
    """``settings`` when ``--every`` and ``--lateness`` are in range (else
    :class:`~stream.contract.InputError`)."""
    check_limits(settings, WINDOW_LIMITS)
    return settings


_OFFSET = re.compile(r"(?:UTC|GMT|Z)?\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?", re.IGNORECASE)


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone this machine knows (with a hint), or None."""
    try:
        zoneinfo.ZoneInfo(name)
        return None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    shown = name if len(name) <= SHOWN_CHARS else name[:SHOWN_CHARS] + "..."
    m = _OFFSET.fullmatch(name.strip())
    if m:
        sign, hours, minutes = m[1], int(m[2]), int(m[3] or 0)
        etc = "UTC" if hours == 0 else f"Etc/GMT{'-' if sign == '+' else '+'}{hours}"
        if minutes == 0 and (hours == 0 or (-14 <= (hours if sign == "-" else -hours) <= 12)):
            return (f"{shown!r} is not an IANA time zone name: use the zone of a place, such as "
                    f"Asia/Almaty, or for a fixed UTC{sign}{hours} offset {etc} (Etc signs are "
                    "inverted)")
        return (f"{shown!r} is not an IANA time zone name: use the zone of a place with that "
                "offset, such as Asia/Kolkata for UTC+5:30")
    try:
        known = zoneinfo.available_timezones()
    except OSError:
        known = set()
    same = sorted(z for z in known if z.lower() == name.strip().lower())
    hint = f"did you mean {same[0]}?" if same else "use an IANA name such as Asia/Almaty or Etc/GMT-5"
    return f"unknown time zone {shown!r}: {hint}"


def timezone_arg(text: str) -> str:
    """``--timezone``: an IANA zone name (an argparse ``type``)."""
    problem = timezone_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def check_timezone(name: str) -> str:
    """``name`` when it is an IANA time zone; else :class:`~stream.contract.InputError`
    ``--timezone: unknown time zone 'Asia/Astana': use an IANA name such as Asia/Almaty ...``."""
    problem = timezone_problem(name) if isinstance(name, str) else "must be a string"
    if problem is not None:
        raise InputError(f"--timezone: {problem}")
    return name


@dataclass(frozen=True)
class EngineOptions:
    """What the engine computes and how (defaults and reasons in ``docs/METHOD.md``).

    ``res``: H3 resolution of cells; ``horizon_ms``: a device is present where its last ping
    within this time was; ``activity_ms``: devices seen within this time are active;
    ``night_start_h``/``night_length_h``: the local night window (hours); ``nights``: residence
    is the modal night region over this many nights, ``min_nights`` of them seen; ``timezone``:
    IANA zone of the nights; ``home_mcc``: domestic SIMs' MCC (others are roamers); ``k``:
    figures resting on fewer devices are suppressed; ``model_rse``: model-error term of the
    present interval (``away_rse`` for people counted away from their home region,
    ``sibling_away_rse`` for those counted away from it but within the same parent region,
    ``transition_rse`` for the people the stale-mover rule moves in or out of a region),
    ``resident_model_rse`` that of the resident interval. Migration
    (:mod:`estimators.migration`): ``move_window_nights`` (majority window), ``move_min_nights``
    (nights the new region must hold), ``confirm_nights``, ``lapse_nights``.
    ``footprints``: how a border cell's devices are placed (:data:`FOOTPRINTS`).
    Foreign SIMs (:mod:`estimators.foreign`): ``foreign`` (follow their stays; default on),
    ``mcc_table`` (MCC → country CSV; None: the table defacto ships), ``country_factors``
    (``country,factor[,rse]`` CSV of people per foreign SIM from an outside source; None: device
    counts only), ``foreign_countries`` (a fixed list of countries with rows of their own, for a
    stable label set; None: the 10 largest of each period).

    Ranges: :data:`ENGINE_LIMITS`, plus ``horizon <= activity``, ``min_nights <= nights``,
    ``move_min_nights <= move_window_nights`` and an IANA ``timezone``; raises
    :class:`~stream.contract.InputError` naming the option otherwise.
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
    away_rse: float = EstimateConfig.away_rse
    sibling_away_rse: float = EstimateConfig.sibling_away_rse
    resident_model_rse: float = EstimateConfig.resident_model_rse
    transition_rse: float = EstimateConfig.transition_rse
    stale_ms: int = EstimateConfig.stale_ms
    routine_ms: int = EstimateConfig.routine_ms
    transitions: bool = EstimateConfig.transitions
    move_window_nights: int = MigrationConfig.window_nights
    move_min_nights: int = MigrationConfig.min_nights
    confirm_nights: int = MigrationConfig.confirm_nights
    lapse_nights: int = MigrationConfig.lapse_nights
    foreign: bool = True
    mcc_table: str | None = None
    country_factors: str | None = None
    foreign_countries: tuple[str, ...] | None = None
    footprints: str = "reference"

    def __post_init__(self) -> None:
        check_limits(self, ENGINE_LIMITS)
        if self.footprints not in FOOTPRINTS:
            raise InputError(f"--footprints must be one of {', '.join(FOOTPRINTS)}, "
                             f"got {str(self.footprints)[:SHOWN_CHARS]!r}")
        if self.horizon_ms > self.activity_ms:
            raise InputError(f"--horizon ({duration_text(self.horizon_ms)}) must not exceed "
                             f"--activity ({duration_text(self.activity_ms)})")
        if self.stale_ms % (10 * MINUTE_MS):
            raise InputError(f"--stale must be whole 10-minute steps (e.g. 10m, 30m, 1h), got "
                             f"{duration_text(self.stale_ms)}")
        if self.min_nights > self.nights:
            raise InputError(f"--min-nights must be at most --nights ({self.nights}), "
                             f"got {self.min_nights}")
        if self.move_min_nights > self.move_window_nights:
            raise InputError(f"--move-min-nights must be at most --move-window "
                             f"({self.move_window_nights}), got {self.move_min_nights}")
        check_timezone(self.timezone)
        for code in self.foreign_countries or ():
            if not (isinstance(code, str) and re.fullmatch(r"[A-Z]{2}", code)):
                raise InputError(f"--foreign-countries: {str(code)[:SHOWN_CHARS]!r} is not an "
                                 "ISO 3166-1 alpha-2 code (two capital letters)")

    def migration_config(self) -> MigrationConfig:
        """The migration rules; raises :class:`~stream.contract.InputError` when out of range."""
        try:
            return MigrationConfig(window_nights=self.move_window_nights,
                                   min_nights=self.move_min_nights,
                                   confirm_nights=self.confirm_nights,
                                   lapse_nights=self.lapse_nights)
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def foreign_figures(self) -> ForeignFigureConfig:
        """How foreign-SIM figures are published (``k``, ``model_rse`` as elsewhere, the fixed
        country list if any)."""
        return ForeignFigureConfig(k=self.k, countries=self.foreign_countries)

    def country_table(self) -> CountryTable | None:
        """The MCC table (None with ``foreign`` off); raises
        :class:`~stream.contract.InputError` naming the file and line."""
        return load_mcc_table(self.mcc_table) if self.foreign else None

    def factors(self, table: CountryTable | None) -> list[CountryFactor]:
        """The per-country factors (none without a file or a table); raises
        :class:`~stream.contract.InputError` naming the file and line."""
        if table is None or self.country_factors is None:
            return []
        return load_country_factors(self.country_factors, table)

    def engine_config(self) -> EngineConfig:
        """The estimators' configuration; raises :class:`~stream.contract.InputError` naming
        the option that is out of range."""
        try:
            return EngineConfig(
                res=self.res, timezone=self.timezone, home_mcc=self.home_mcc,
                night=NightWindow(self.night_start_h, self.night_length_h, self.nights),
                estimate=EstimateConfig(horizon_ms=self.horizon_ms, activity_ms=self.activity_ms,
                                        min_nights=self.min_nights, k_anonymity=self.k,
                                        model_rse=self.model_rse, away_rse=self.away_rse,
                                        sibling_away_rse=self.sibling_away_rse,
                                        resident_model_rse=self.resident_model_rse,
                                        transition_rse=self.transition_rse,
                                        stale_ms=self.stale_ms, routine_ms=self.routine_ms,
                                        transitions=self.transitions),
                migration=self.migration_config(),
                foreign=ForeignConfig() if self.foreign else None,
                foreign_figures=self.foreign_figures())
        except ValueError as exc:
            raise InputError(str(exc)) from None


def build_engine(options: EngineOptions, reference: Reference, calibrated: bool = True,
                 people: Mapping[str, float] | None = None) -> Engine:
    """A fresh engine for ``reference``'s regions with its cell plan loaded.

    ``calibrated=False`` leaves out the calibration (to fit one). With ``options.foreign`` the MCC
    table and the per-country factors are loaded. The devices of border cells are placed by
    ``options.footprints`` (:func:`footprint_prior`; ``people``: the reference population at
    hand, for ``defacto calibrate``), their weights read from the disk cache when an earlier
    run stored them (:mod:`stream.estimate.footprint_cache`). Raises
    :class:`~stream.contract.InputError` for options out of range, bad MCC or factor files, or a
    cell plan the engine cannot hold (naming the file).
    """
    config = options.engine_config()
    table = options.country_table()
    factors = options.factors(table)
    try:
        engine = Engine(reference.regions, config, reference.calibration if calibrated else None,
                        countries=table, country_factors=factors)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    uncalibrated = calibrated and reference.calibration is None
    if reference.cell_plan is not None:
        load_plan(engine, reference.cell_plan)
        rule, prior = footprint_prior(options, reference, calibrated, people)
        if rule != options.footprints:
            is_default = options.footprints == EngineOptions.footprints
            border = "devices at cells straddling a region border count in their site's region"
            _warn_once(f"no --calibration: every device counts as one person, and {border} "
                       f"({'the default ' if is_default else ''}--footprints {options.footprints} "
                       "spreads them by the reference population a calibration carries)"
                       if uncalibrated else
                       f"--footprints {options.footprints}{' (the default)' if is_default else ''}"
                       ": no reference population (the people column of a --calibration written "
                       f"by defacto calibrate); {border}, as with --footprints site")
            uncalibrated = False  # said
        fitted = reference.calibration.footprints() \
            if calibrated and reference.calibration is not None else None
        if fitted is not None and fitted != rule:
            _warn_once(f"the calibration was fitted with --footprints {fitted}, this run places "
                       f"the devices of border cells by {rule}: its factors fit the other rule "
                       f"(refit with defacto calibrate --footprints {rule}, or run with "
                       f"--footprints {fitted})")
        _, fp = plan_footprints(engine, rule, prior, cached_weights)  # computed once per plan
        if fp is not None:
            apply_footprints(engine, fp)
    if uncalibrated:
        _warn_once("no --calibration: every device counts as one person")
    return engine


FOOTPRINTS = RULES
"""The ``--footprints`` choices (:data:`estimators.footprints.RULES`)."""

_warned: set[str] = set()


def _warn_once(text: str) -> None:
    """A ``defacto: warning:`` line on stderr, once per process (a worker builds an engine per
    partition)."""
    if text not in _warned:
        _warned.add(text)
        print(f"defacto: warning: {text}", file=sys.stderr)


def footprint_prior(options: EngineOptions, reference: Reference, calibrated: bool = True,
                    people: Mapping[str, float] | None = None
                    ) -> tuple[str, Mapping[str, float] | None]:
    """The footprint rule in force and the population it weights by: ``options.footprints``,
    except that ``reference`` needs the reference population (``people`` when given, else the
    calibration's, :meth:`~estimators.calibration.Calibration.people`, when ``calibrated``) and
    falls back to ``site`` without one (an uncalibrated run, or a calibration file without its
    people column). Never the registry: it is what the estimates are compared with."""
    if options.footprints != "reference":
        return options.footprints, None
    if people is None and calibrated and reference.calibration is not None:
        people = reference.calibration.people()
    return ("reference", people) if people else ("site", None)


def load_plan(engine: Engine, plan: CellPlanRows) -> None:
    """Bin a cell plan into ``engine`` (once; cell-id pings then resolve by plan row).

    Raises :class:`~stream.contract.InputError` naming the plan's file when the engine cannot
    hold it (too many operators or distinct H3 cells at this resolution).
    """
    try:
        engine.load_cell_plan(plan.operator, plan.cell, plan.lat, plan.lon, plan.azimuth_deg,
                              plan.range_m)
    except ValueError as exc:
        raise InputError(f"{plan.path or 'cell plan'}: {exc}") from None

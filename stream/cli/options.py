"""Argument types and shared option groups of the command line, and their typed configs.

Durations are parsed into milliseconds here (``6h`` → ``21_600_000``), once. Every numeric option
is parsed and range-checked by its :class:`~stream.estimate.engine_options.Limit` (the tables
:data:`~stream.estimate.engine_options.ENGINE_LIMITS`, ``WINDOW_LIMITS``,
:data:`~stream.worker.config.WORKER_LIMITS`, ...), the same one its config checks again; a value
out of range is one line ``defacto: error: argument --res: must be an integer 0..15 ...``
(:class:`Parser`). The configs built from the parsed options (:func:`engine_options`,
:func:`window_settings`, :func:`reference_paths`) are what the rest of defacto receives.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any, NoReturn

from stream.contract import InputError
from stream.estimate.engine_options import (
    ENGINE_LIMITS,
    FOOTPRINTS,
    WINDOW_LIMITS,
    EngineOptions,
    check_window_settings,
    timezone_arg,
)
from stream.estimate.windows import WindowSettings
from stream.sources.reference_files import ReferencePaths
from stream.timefmt import parse_iso_ms
from stream.worker.config import WorkerConfig

KAFKA_ENV, REDIS_ENV = "KAFKA_BOOTSTRAP", "REDIS_URL"
DEFAULT_KAFKA, DEFAULT_REDIS = WorkerConfig.kafka, WorkerConfig.redis_url


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``defacto: error: ...``, exit code 2 (like
    every other input problem; ``--help`` still shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"defacto: error: {message} (see {self.prog} --help)\n")


def night_arg(text: str) -> tuple[float, float]:
    """A local night window ``22:00-06:00`` as (start hour, length in hours)."""
    m = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?-(\d{1,2})(?::(\d{2}))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"night window must look like 22:00-06:00, got {text!r}")
    start = int(m[1]) + int(m[2] or 0) / 60
    end = int(m[3]) + int(m[4] or 0) / 60
    if start >= 24 or end >= 24 or start == end:
        raise argparse.ArgumentTypeError(f"night window must be HH:MM-HH:MM with hours 0..23 and "
                                         f"two different times, e.g. 22:00-06:00, got {text!r}")
    return start, (end - start) % 24


def env_default(var: str, fallback: str) -> str:
    """An option's default from the environment variable ``var``, else ``fallback``."""
    return os.environ.get(var, fallback)


def add_kafka_option(p: argparse.ArgumentParser) -> None:
    """``--kafka`` (default ``$KAFKA_BOOTSTRAP`` or 127.0.0.1:9092)."""
    p.add_argument("--kafka", default=env_default(KAFKA_ENV, DEFAULT_KAFKA),
                   help=f"bootstrap servers (default ${KAFKA_ENV} or {DEFAULT_KAFKA})")


def add_redis_option(p: argparse.ArgumentParser) -> None:
    """``--redis`` (default ``$REDIS_URL`` or the local Redis)."""
    p.add_argument("--redis", default=env_default(REDIS_ENV, DEFAULT_REDIS),
                   help=f"Redis URL (default ${REDIS_ENV} or {DEFAULT_REDIS})")


def add_reference_options(p: argparse.ArgumentParser, registry: bool = True,
                          calibration: bool = True) -> None:
    """``--registry`` and ``--calibration`` (``--regions`` and ``--cells`` are engine options)."""
    if registry:
        p.add_argument("--registry", help="registry CSV (region,registered)")
    if calibration:
        p.add_argument("--calibration", help="calibration CSV (region,operator,factor[,rse])")


def add_every_option(p: argparse.ArgumentParser) -> None:
    """``--every``: the snapshot interval."""
    p.add_argument("--every", type=WINDOW_LIMITS["every_ms"].arg, default=WindowSettings.every_ms,
                   help="snapshot interval, aligned to UTC (default 1h; the same in replay and worker)")


def _country_list(text: str) -> tuple[str, ...]:
    """``RU, uz,KG`` -> ``("RU", "UZ", "KG")`` (checked as ISO codes by ``EngineOptions``)."""
    return tuple(c.strip().upper() for c in text.split(",") if c.strip())


def add_engine_options(p: argparse.ArgumentParser, calibrate: bool = False,
                       period: bool = True) -> None:
    """The options that decide the figures (they must match between replay and workers);
    ``calibrate``: the help of ``defacto calibrate``, whose population prior is its
    ``--reference``; ``period``: ``--from``/``--to`` (files only: a worker follows its topic
    from its committed offsets and has no period, so it does not take them)."""
    g = p.add_argument_group("engine")
    # calibrate fits factors from the homes and activity of devices: these options do not change
    # them, and are accepted so that one set of engine options serves every command
    o = p.add_argument_group(
        "engine options without effect on the factors",
        "accepted so that one set of engine options serves calibrate, replay and the workers") \
        if calibrate else g
    g.add_argument("--regions", required=True, help="regions GeoJSON FeatureCollection")
    g.add_argument("--cells", help="cell plan CSV (operator,cell,lat,lon[,azimuth_deg,range_m]); "
                   "needed for pings that carry a cell id")
    lim = ENGINE_LIMITS
    g.add_argument("--res", type=lim["res"].arg, default=EngineOptions.res,
                   help="H3 resolution of cells, 0..15 (default %(default)s)")
    o.add_argument("--horizon", type=lim["horizon_ms"].arg, default=EngineOptions.horizon_ms,
                   help="a device counts as present where its last ping within this time was, "
                        f"{lim['horizon_ms'].allowed()} (default 6h; see docs/METHOD.md)")
    g.add_argument("--activity", type=lim["activity_ms"].arg, default=EngineOptions.activity_ms,
                   help=f"devices seen within this window are active, "
                        f"{lim['activity_ms'].allowed()}, at least --horizon (default 1d)")
    g.add_argument("--night", type=night_arg,
                   default=(EngineOptions.night_start_h, EngineOptions.night_length_h),
                   help="local night window for residence, HH:MM-HH:MM in --timezone "
                        "(default 22:00-06:00)")
    g.add_argument("--nights", type=lim["nights"].arg, default=EngineOptions.nights,
                   help="residence = modal night region over this many nights, 1..60 "
                        "(default %(default)s)")
    g.add_argument("--min-nights", type=lim["min_nights"].arg, default=EngineOptions.min_nights,
                   help="nights a device must be seen at night to get a home (default %(default)s)")
    g.add_argument("--timezone", type=timezone_arg, default=EngineOptions.timezone,
                   help="local time zone, an IANA name (default %(default)s)")
    g.add_argument("--home-mcc", type=lim["home_mcc"].arg, default=EngineOptions.home_mcc,
                   help="MCC of domestic SIMs; others are roamers (default 401, Kazakhstan)")
    o.add_argument("--k", type=lim["k"].arg, default=EngineOptions.k,
                   help="suppress figures resting on fewer devices (default %(default)s)")
    o.add_argument("--model-rse", type=lim["model_rse"].arg, default=EngineOptions.model_rse,
                   help="model-error relative standard error in the interval, in [0, 1) "
                        "(default %(default)s)")
    o.add_argument("--away-rse", type=lim["away_rse"].arg, default=EngineOptions.away_rse,
                   help="the same for people counted away from their home region "
                        "(default %(default)s)")
    o.add_argument("--sibling-away-rse", type=lim["sibling_away_rse"].arg,
                   default=EngineOptions.sibling_away_rse,
                   help="the same for people counted away from their home region but within "
                        "the same parent region, e.g. in another district of their city "
                        "(default %(default)s)")
    o.add_argument("--resident-model-rse", type=lim["resident_model_rse"].arg,
                   default=EngineOptions.resident_model_rse,
                   help="model-error relative standard error of the resident interval, in "
                        "[0, 1) (default %(default)s)")
    o.add_argument("--transition-rse", type=lim["transition_rse"].arg,
                   default=EngineOptions.transition_rse,
                   help="model-error relative standard error of the people the stale-mover rule "
                        "moves in or out of a region, in [0, 5] (default %(default)s)")
    o.add_argument("--stale", type=lim["stale_ms"].arg, default=EngineOptions.stale_ms,
                   help="a mover (home and daytime regions differ) whose last ping is older is "
                        "re-placed from what fresh movers did since; a multiple of 10 minutes "
                        "(default 10m)")
    o.add_argument("--routine", type=lim["routine_ms"].arg, default=EngineOptions.routine_ms,
                   help="a daytime region (latest ping 10:00-16:00 local) older than this is not "
                        "used (default 3d)")
    o.add_argument("--no-transitions", dest="transitions", action="store_false",
                   help="do not re-place stale movers (devices count where their last ping was)")
    prior = ("people per km2 of --reference (the factors then fit this rule: replay and run "
             "the workers with the same --footprints)") if calibrate else \
        ("people per km2 of the calibration's reference population (the people column "
         "defacto calibrate writes; 'site' without it)")
    g.add_argument("--footprints", choices=FOOTPRINTS, default=EngineOptions.footprints,
                   help="devices at a cell whose footprint straddles a region border: "
                        "'reference' spreads them over the regions its Voronoi footprint covers "
                        f"by area times {prior}; 'site' counts them all in the region of the "
                        "cell's site; 'area' spreads them by area alone (default %(default)s; "
                        "docs/METHOD.md §1)")
    o.add_argument("--move-min-nights", type=lim["move_min_nights"].arg,
                   default=EngineOptions.move_min_nights,
                   help="migration: nights out of the last --move-window a new region must hold "
                        "(and more than half of those seen) to become the usual residence "
                        "(default %(default)s)")
    o.add_argument("--move-window", type=lim["move_window_nights"].arg,
                   default=EngineOptions.move_window_nights, metavar="NIGHTS",
                   help="migration: nights of the majority window (default %(default)s)")
    o.add_argument("--confirm-nights", type=lim["confirm_nights"].arg,
                   default=EngineOptions.confirm_nights,
                   help="migration: nights in the new region that confirm a move (default %(default)s)")
    o.add_argument("--lapse-nights", type=lim["lapse_nights"].arg,
                   default=EngineOptions.lapse_nights,
                   help="migration: nights without any ping that lapse a SIM (default %(default)s)")
    o.add_argument("--no-foreign", dest="foreign", action="store_false",
                   help="do not follow the stays of foreign SIMs")
    o.add_argument("--mcc-table", metavar="CSV",
                   help="MCC -> country table (mcc,iso2[,country]); default: the shipped table")
    o.add_argument("--country-factors", metavar="CSV",
                   help="people per foreign SIM by country (country,factor[,rse]) from an outside "
                        "source such as border statistics; default: device counts only")
    o.add_argument("--foreign-countries", type=_country_list, metavar="CC,CC,...",
                   help="fixed countries with rows of their own, e.g. RU,UZ,KG,CN,TR "
                        "(default: the 10 largest)")
    g.add_argument("--key-file", help="pseudonymization secret (default: $DEFACTO_PSEUDONYM_KEY, "
                   "else a random per-run key)" if period else
                   "pseudonymization secret, the same for every worker (default: "
                   "$DEFACTO_PSEUDONYM_KEY; a worker refuses to start without one)")
    g.add_argument("--lateness", type=WINDOW_LIMITS["lateness_ms"].arg,
                   default=WindowSettings.lateness_ms,
                   help="how late (event time) a ping may arrive and still count (default 10m)")
    if period:
        g.add_argument("--from", dest="from_", metavar="ISO",
                       help="ignore pings before this time (included: ISO 8601 such as "
                            "2026-03-02T00:00:00Z or 2026-03-02T05:00+05:00; a time without a "
                            "zone, or a bare date, is UTC)")
        g.add_argument("--to", metavar="ISO",
                       help="ignore pings from this time on (excluded; written as --from)")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The parsed engine options as :class:`~stream.estimate.engine_options.EngineOptions`."""
    night_start, night_length = args.night
    return EngineOptions(res=args.res, horizon_ms=args.horizon, activity_ms=args.activity,
                         night_start_h=night_start, night_length_h=night_length,
                         nights=args.nights, min_nights=args.min_nights, timezone=args.timezone,
                         home_mcc=args.home_mcc, k=args.k, model_rse=args.model_rse,
                         away_rse=args.away_rse, sibling_away_rse=args.sibling_away_rse,
                         resident_model_rse=args.resident_model_rse,
                         transition_rse=args.transition_rse,
                         stale_ms=args.stale, routine_ms=args.routine,
                         transitions=args.transitions,
                         move_window_nights=args.move_window, move_min_nights=args.move_min_nights,
                         confirm_nights=args.confirm_nights, lapse_nights=args.lapse_nights,
                         foreign=args.foreign, mcc_table=args.mcc_table,
                         country_factors=args.country_factors,
                         foreign_countries=args.foreign_countries,
                         footprints=getattr(args, "footprints", EngineOptions.footprints))


def window_settings(args: argparse.Namespace) -> WindowSettings:
    """The parsed ``--every`` and ``--lateness`` as window settings."""
    return check_window_settings(WindowSettings(every_ms=args.every, lateness_ms=args.lateness))


def _path(value: Any) -> Path | None:
    return Path(value) if value else None


def reference_paths(args: argparse.Namespace) -> ReferencePaths:
    """The parsed reference file options."""
    return ReferencePaths(regions=Path(args.regions), registry=_path(getattr(args, "registry", None)),
                          calibration=_path(getattr(args, "calibration", None)),
                          cells=_path(args.cells))


def period(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """``--from``/``--to`` as UTC ms; raises :class:`~stream.contract.InputError`."""
    try:
        start = parse_iso_ms(args.from_) if args.from_ else None
    except ValueError as exc:
        raise InputError(f"--from: {exc}") from None
    try:
        end = parse_iso_ms(args.to) if args.to else None
    except ValueError as exc:
        raise InputError(f"--to: {exc}") from None
    if start is not None and end is not None and end <= start:
        raise InputError("--to must be after --from")
    return start, end

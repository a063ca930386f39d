"""Argument types and shared option groups of the command line, and their typed configs.

Durations are parsed into milliseconds here (``6h`` → ``21_600_000``), once; the configs built
from the parsed options (:func:`engine_options`, :func:`window_settings`,
:func:`reference_paths`) are what the rest of defacto receives.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from stream.contract import InputError
from stream.estimate.engine_options import EngineOptions
from stream.estimate.windows import WindowSettings
from stream.sources.reference_files import ReferencePaths
from stream.timefmt import parse_duration_ms, parse_iso_ms
from stream.worker.config import WorkerConfig

KAFKA_ENV, REDIS_ENV = "KAFKA_BOOTSTRAP", "REDIS_URL"
DEFAULT_KAFKA, DEFAULT_REDIS = WorkerConfig.kafka, WorkerConfig.redis_url


def duration_ms_arg(text: str) -> int:
    """A positive duration (``90s``, ``30m``, ``6h``, ``1d``) in milliseconds."""
    try:
        value = parse_duration_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return value


def gap_threshold_arg(text: str) -> float:
    """A gap threshold: a fraction such as ``0.10``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"gap threshold must be a number, got {text!r}") from None
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"gap threshold is a fraction such as 0.10, got {text!r}")
    return value


def night_arg(text: str) -> tuple[float, float]:
    """A local night window ``22:00-06:00`` as (start hour, length in hours)."""
    m = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?-(\d{1,2})(?::(\d{2}))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"night window must look like 22:00-06:00, got {text!r}")
    start = int(m[1]) + int(m[2] or 0) / 60
    end = int(m[3]) + int(m[4] or 0) / 60
    if start >= 24 or end >= 24 or start == end:
        raise argparse.ArgumentTypeError(f"bad night window {text!r}")
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
    p.add_argument("--every", type=duration_ms_arg, default=WindowSettings.every_ms,
                   help="snapshot interval, aligned to UTC (default 1h; the same in replay and worker)")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """The options that decide the figures (they must match between replay and workers)."""
    g = p.add_argument_group("engine")
    g.add_argument("--regions", required=True, help="regions GeoJSON FeatureCollection")
    g.add_argument("--cells", help="cell plan CSV (operator,cell,lat,lon[,azimuth_deg,range_m]); "
                   "needed for pings that carry a cell id")
    g.add_argument("--res", type=int, default=EngineOptions.res,
                   help="H3 resolution of cells (default %(default)s)")
    g.add_argument("--horizon", type=duration_ms_arg, default=EngineOptions.horizon_ms,
                   help="a device counts as present where its last ping within this time was "
                        "(default 6h; see docs/METHOD.md)")
    g.add_argument("--activity", type=duration_ms_arg, default=EngineOptions.activity_ms,
                   help="devices seen within this window are active (default 1d)")
    g.add_argument("--night", type=night_arg,
                   default=(EngineOptions.night_start_h, EngineOptions.night_length_h),
                   help="local night window for residence (default 22:00-06:00)")
    g.add_argument("--nights", type=int, default=EngineOptions.nights,
                   help="residence = modal night region over this many nights (default %(default)s)")
    g.add_argument("--min-nights", type=int, default=EngineOptions.min_nights,
                   help="nights a device must be seen at night to get a home (default %(default)s)")
    g.add_argument("--timezone", default=EngineOptions.timezone,
                   help="local time zone (default %(default)s)")
    g.add_argument("--home-mcc", type=int, default=EngineOptions.home_mcc,
                   help="MCC of domestic SIMs; others are roamers (default 401, Kazakhstan)")
    g.add_argument("--k", type=int, default=EngineOptions.k,
                   help="suppress figures resting on fewer devices (default %(default)s)")
    g.add_argument("--model-rse", type=float, default=EngineOptions.model_rse,
                   help="model-error relative standard error in the interval (default %(default)s)")
    g.add_argument("--move-min-nights", type=int, default=EngineOptions.move_min_nights,
                   help="migration: nights out of the last --move-window a new region must hold "
                        "(and more than half of those seen) to become the usual residence "
                        "(default %(default)s)")
    g.add_argument("--move-window", type=int, default=EngineOptions.move_window_nights,
                   metavar="NIGHTS", help="migration: nights of the majority window (default %(default)s)")
    g.add_argument("--confirm-nights", type=int, default=EngineOptions.confirm_nights,
                   help="migration: nights in the new region that confirm a move (default %(default)s)")
    g.add_argument("--lapse-nights", type=int, default=EngineOptions.lapse_nights,
                   help="migration: nights without any ping that lapse a SIM (default %(default)s)")
    g.add_argument("--key-file", help="pseudonymization secret (default: $DEFACTO_PSEUDONYM_KEY, "
                   "else a random per-run key)")
    g.add_argument("--lateness", type=duration_ms_arg, default=WindowSettings.lateness_ms,
                   help="how late (event time) a ping may arrive and still count (default 10m)")
    g.add_argument("--from", dest="from_", metavar="ISO", help="ignore pings before this time")
    g.add_argument("--to", metavar="ISO", help="ignore pings from this time on")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The parsed engine options as :class:`~stream.estimate.engine_options.EngineOptions`."""
    night_start, night_length = args.night
    return EngineOptions(res=args.res, horizon_ms=args.horizon, activity_ms=args.activity,
                         night_start_h=night_start, night_length_h=night_length,
                         nights=args.nights, min_nights=args.min_nights, timezone=args.timezone,
                         home_mcc=args.home_mcc, k=args.k, model_rse=args.model_rse,
                         move_window_nights=args.move_window, move_min_nights=args.move_min_nights,
                         confirm_nights=args.confirm_nights, lapse_nights=args.lapse_nights)


def window_settings(args: argparse.Namespace) -> WindowSettings:
    """The parsed ``--every`` and ``--lateness`` as window settings."""
    return WindowSettings(every_ms=args.every, lateness_ms=args.lateness)


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
        end = parse_iso_ms(args.to) if args.to else None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if start is not None and end is not None and end <= start:
        raise InputError("--to must be after --from")
    return start, end

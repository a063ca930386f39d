"""Loading and validating scenario files (TOML) for the simulator.

A scenario describes regions (with approximate shapes), operators, devices, daily movement,
migration and foreign visitors. Every field is documented in docs/SCENARIOS.md. Validation is
strict (unknown keys are errors) so that a typo in a hand-edited file fails loudly with a one-line
``ValueError`` naming the field, e.g. ``astana.toml: regions[3].shape.radius_km: must be > 0``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import stream.simulator.geometry as geometry
from estimators.units import HOUR_MS, SECOND_MS

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
RESERVED_REGION_IDS = frozenset({"unassigned"})
_REQUIRED = object()

_DEFAULT_DIURNAL = (
    0.20, 0.12, 0.08, 0.06, 0.06, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 1.00,
    1.00, 1.00, 0.95, 0.95, 0.95, 1.00, 1.00, 1.00, 0.90, 0.75, 0.55, 0.35,
)
_DEFAULT_VISITOR_MCC = {250: 0.30, 460: 0.15, 434: 0.25, 437: 0.15, 286: 0.10, 262: 0.05}


@dataclass(frozen=True)
class Operator:
    """A mobile network (MCC+MNC) and how its pings carry location."""

    id: str
    name: str
    location: str
    cell_spacing_urban_km: float
    cell_spacing_rural_km: float
    cell_jitter: float
    latlon_sd_urban_m: float
    latlon_sd_rural_m: float


@dataclass(frozen=True)
class ShapeSpec:
    """The validated shape table of a region (see geometry.build_shapes for the meaning)."""

    kind: str
    lat: float = math.nan
    lon: float = math.nan
    radius_km: float = math.nan
    inner_km: float = 0.0
    from_deg: float = 0.0
    to_deg: float = 360.0
    points: tuple[tuple[float, float], ...] = ()
    circles: tuple[tuple[float, float, float], ...] = ()
    center: tuple[float, float] | None = None
    minus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Region:
    """One region: a leaf (carries people) or a parent (sum of its children)."""

    id: str
    name: str
    parent: str | None
    urban: bool
    population: int | None
    registered: int | None
    visitors: int
    market: dict[str, float] | None
    visitor_home_mcc: dict[int, float] | None
    concentration: float | None
    local_share: float | None
    shape: ShapeSpec | None
    path: str


@dataclass(frozen=True)
class DeviceParams:
    """How many devices people carry and how often devices ping."""

    per_person_urban: tuple[float, float, float]
    per_person_rural: tuple[float, float, float]
    rate_median_per_h: float
    rate_sigma: float
    diurnal: tuple[float, ...]
    burst_shape: float = 0.0


@dataclass(frozen=True)
class MobilityParams:
    """Daily home -> work -> home movement."""

    work_share_urban: float
    work_share_rural: float
    local_share_urban: float
    local_share_rural: float
    depart_mean_h: float
    depart_sd_min: float
    return_mean_h: float
    return_sd_min: float
    attendance_weekday: float
    attendance_weekend: float


@dataclass(frozen=True)
class VisitorParams:
    """Foreign visitors (roamers): origin mix, length of stay, behaviour."""

    home_mcc: dict[int, float]
    stay_days: float
    gap_days: float
    rate_factor: float
    day_out_share: float


@dataclass(frozen=True)
class TemporaryParams:
    """Stays away from home that are not moves (the oracle's "no" for migration).

    ``holidays_per_year``: holidays per resident and year, each ``holiday_days`` long (uniform
    range, whole days) in a leaf drawn by population; ``shift_share``: share of residents on
    rotational shift work, ``shift_days`` away then as many at home, at a leaf drawn from
    ``shift_to`` (region id → weight; default by population).
    """

    holidays_per_year: float = 0.0
    holiday_days: tuple[int, int] = (7, 28)
    shift_share: float = 0.0
    shift_days: int = 15
    shift_to: dict[str, float] | None = None


@dataclass(frozen=True)
class ChurnParams:
    """SIMs that go silent for good (``lapse_per_year``: share of residents' devices per year)
    and SIMs that first appear during the run (``new_share``: share of residents' devices that
    start at a uniform time within it)."""

    lapse_per_year: float = 0.0
    new_share: float = 0.0


FOREIGN_KINDS = ("same_day", "short", "seasonal", "long")
"""The kinds of stay of ``[foreign]`` visitors, in this order (``ForeignStays.kind``)."""


@dataclass(frozen=True)
class ForeignParams:
    """Foreign visitors with stays of realistic lengths (scenario ``[foreign]``; absent: off).

    ``arrivals_per_year`` stays at full scale arrive, uniformly over time; each goes to a leaf
    drawn from ``to`` (region id → weight, spread over its leaves by population; default: by
    the regions' ``visitors`` stock) and comes from a home MCC drawn from ``home_mcc`` (default:
    the destination's ``visitor_home_mcc`` mix). ``stays`` gives the shares of the kinds of
    :data:`FOREIGN_KINDS`: ``same_day`` (arrives 06:00-12:00 local, leaves 2 h later at the
    earliest and by 20:00), ``short`` ``short_days``, ``seasonal`` ``seasonal_days`` and
    ``long`` ``long_days`` (uniform, in days). Of the seasonal and long stayers a share
    ``local_sim_share`` buys a local SIM ``local_sim_after_days`` after arriving: from then on
    a second, domestic device (home MCC 401) pings, and the foreign SIM goes quiet, except for
    ``dual_sim_share`` of them (dual-SIM phones: both keep pinging). Seasonal workers go out on
    the workers' schedule, the others with ``[visitors]`` ``day_out_share``; foreign SIMs ping at
    the visitors' ``rate_factor``.
    """

    arrivals_per_year: float
    stays: dict[str, float]
    home_mcc: dict[int, float] | None = None
    to: dict[str, float] | None = None
    short_days: tuple[float, float] = (1.0, 14.0)
    seasonal_days: tuple[float, float] = (30.0, 90.0)
    long_days: tuple[float, float] = (91.0, 365.0)
    local_sim_share: float = 0.0
    local_sim_after_days: tuple[float, float] = (3.0, 30.0)
    dual_sim_share: float = 0.0

    def days(self, kind: str) -> tuple[float, float]:
        """The ``[min, max]`` stay length of a kind, in days."""
        return {"short": self.short_days, "seasonal": self.seasonal_days,
                "long": self.long_days}[kind]


@dataclass(frozen=True)
class Commute:
    """A share of the workers living in ``from_id`` who work in the ``to`` regions."""

    from_id: str
    to: dict[str, float]
    share: float


@dataclass(frozen=True)
class Migration:
    """People moving home from the ``from_ids`` regions to the ``to`` regions."""

    from_ids: tuple[str, ...]
    to: dict[str, float]
    per_year: float


@dataclass(frozen=True)
class Scenario:
    """A validated scenario with resolved region shapes."""

    name: str
    description: str
    start_ms: int
    utc_offset_h: int
    disorder_s: float
    reference_rse: float
    circle_vertices: int
    operators: tuple[Operator, ...]
    market: dict[str, float]
    regions: tuple[Region, ...]
    devices: DeviceParams
    mobility: MobilityParams
    visitors: VisitorParams
    commutes: tuple[Commute, ...]
    migrations: tuple[Migration, ...]
    temporary: TemporaryParams
    churn: ChurnParams
    outline: tuple[tuple[float, float], ...]
    shapes: dict[str, geometry.Shape]
    text: str
    source: str
    foreign: ForeignParams | None = None
    late_share: float = 0.0
    late_s: float = 0.0
    variant: str = ""
    variants: tuple[str, ...] = ()

    @cached_property
    def _by_id(self) -> dict[str, Region]:
        return {r.id: r for r in self.regions}

    def region(self, region_id: str) -> Region:
        """Return the region with this id (KeyError if unknown)."""
        return self._by_id[region_id]

    @cached_property
    def leaf_ids(self) -> list[str]:
        """Ids of the leaf regions (those without children), in file order."""
        parents = {r.parent for r in self.regions if r.parent is not None}
        return [r.id for r in self.regions if r.id not in parents]

    def leaves_under(self, region_id: str) -> list[str]:
        """Leaf ids at or below ``region_id`` (the region itself if it is a leaf)."""
        return [leaf for leaf in self.leaf_ids if region_id in self.ancestors(leaf)]

    def ancestors(self, region_id: str) -> list[str]:
        """The region and its parents up to the top, nearest first."""
        chain = [region_id]
        while (parent := self.region(chain[-1]).parent) is not None:
            chain.append(parent)
        return chain


class _Table:
    """Typed access to one TOML table; every error names the field's full path."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        self.source = source
        self.path = path
        if not isinstance(data, dict):
            self.fail("", f"must be a table, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def fail(self, key: str, message: str) -> None:
        """Raise the one-line ValueError for field ``key`` of this table."""
        field = ".".join(p for p in (self.path, key) if p)
        raise ValueError(f"{self.source}: {field or '<top level>'}: {message}")

    def child(self, key: str) -> str:
        """The full path of a sub-field, for nested tables and list items."""
        return ".".join(p for p in (self.path, key) if p)

    def raw(self, key: str, default: Any = _REQUIRED) -> Any:
        """The value of ``key`` as parsed (no type check), or the default."""
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            self.fail(key, "is required")
        return default

    def text(self, key: str, default: Any = _REQUIRED) -> Any:
        """A string field."""
        value = self.raw(key, default)
        if value is not default and not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return value

    def flag(self, key: str, default: Any = _REQUIRED) -> Any:
        """A boolean field."""
        value = self.raw(key, default)
        if value is not default and not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: Any = _REQUIRED, lo: float = -math.inf,
                hi: float = math.inf) -> Any:
        """An integer field within [lo, hi]."""
        value = self.raw(key, default)
        if value is default:
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be an integer, got {value!r}")
        self._check_range(key, value, lo, hi)
        return value

    def number(self, key: str, default: Any = _REQUIRED, lo: float = -math.inf,
               hi: float = math.inf, lo_open: bool = False) -> Any:
        """A real-valued field within [lo, hi] (or (lo, hi] when lo_open)."""
        value = self.raw(key, default)
        if value is default:
            return value
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(
                value):
            self.fail(key, f"must be a number, got {value!r}")
        if lo_open and value <= lo:
            self.fail(key, f"must be > {lo:g}, got {value!r}")
        self._check_range(key, value, lo, hi)
        return float(value)

    def _check_range(self, key: str, value: float, lo: float, hi: float) -> None:
        if value < lo or value > hi:
            self.fail(key, f"must be between {lo:g} and {hi:g}, got {value!r}")

    def sub(self, key: str, required: bool = False) -> _Table:
        """A nested table (empty if absent and not required)."""
        value = self.raw(key, _REQUIRED if required else {})
        return _Table(value, self.child(key), self.source)

    def items(self, key: str, required: bool = False) -> list[_Table]:
        """An array of tables."""
        value = self.raw(key, _REQUIRED if required else [])
        if not isinstance(value, list):
            self.fail(key, "must be an array of tables")
        return [_Table(v, self.child(f"{key}[{i}]"), self.source) for i, v in enumerate(value)]

    def done(self) -> None:
        """Reject keys that were never read (typos, unsupported fields)."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            self.fail(unknown[0], "unknown field")


def load_scenario(name_or_path: str | Path, variant: str | None = None) -> Scenario:
    """Load a built-in scenario by name (stream/scenarios/NAME.toml) or a .toml file by path.

    ``variant`` (or a name spelt ``NAME:VARIANT``, e.g. ``astana:bursty``) applies one of the
    file's ``[variants.VARIANT]`` override tables (:func:`with_variant`).
    """
    if variant is None and isinstance(name_or_path, str) and ":" in name_or_path \
            and not Path(name_or_path).exists():
        name_or_path, variant = name_or_path.rsplit(":", 1)
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists()):
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        if not path.exists():
            names = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
            raise ValueError(f"unknown scenario {str(name_or_path)!r}: built-in names are {names}")
    if not path.exists():
        raise ValueError(f"scenario file not found: {path}")
    scenario = parse_scenario(path.read_text(encoding="utf-8"), source=path.name)
    return with_variant(scenario, variant) if variant else scenario


_VARIANT_LINE = "variant = "


def with_variant(scenario: Scenario, name: str) -> Scenario:
    """The scenario with its ``[variants.NAME]`` overrides applied (``"base"``: none).

    The result's ``text`` starts with ``variant = "NAME"``, so a written simulation names its
    variant and re-parses to the same scenario. Raises ``ValueError`` for an unknown name.
    """
    text = scenario.text
    if text.startswith(_VARIANT_LINE):
        text = text.split("\n", 1)[1]
    if name == "base":
        return parse_scenario(text, scenario.source) if text != scenario.text else scenario
    return parse_scenario(f'{_VARIANT_LINE}"{name}"\n{text}', scenario.source)


def _merge(base: Any, override: Any, path: str, source: str) -> Any:
    """``override`` laid over ``base``: tables merge key by key; an array of tables takes a
    table keyed by item ``id`` (or ``"*"``: every item) whose values merge into those items;
    anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value, f"{path}.{key}", source) if key in base \
                else value
        return out
    if isinstance(base, list) and base and all(isinstance(b, dict) for b in base) \
            and isinstance(override, dict):
        ids = [str(b.get("id")) for b in base]
        for key in override:
            if key != "*" and key not in ids:
                raise ValueError(f"{source}: {path}.{key}: no item with this id (ids: {ids})")
        return [_merge(_merge(b, override.get("*", {}), path, source),
                       override.get(str(b.get("id")), {}), path, source) for b in base]
    return override


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate scenario TOML text; ``source`` prefixes error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: invalid TOML: {exc}") from None
    variants = data.pop("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise ValueError(f"{source}: variants: must be a table of override tables")
    variant = data.pop("variant", "")
    if variant:
        if variant not in variants:
            raise ValueError(f"{source}: variant: unknown variant {variant!r} "
                             f"(variants: {['base', *sorted(variants)]})")
        data = _merge(data, variants[variant], f"variants.{variant}", source)
    top = _Table(data, "", source)
    operators = _operators(top)
    op_ids = [op.id for op in operators]
    regions = _regions(top, op_ids)
    scenario = Scenario(
        name=top.text("name"),
        description=top.text("description", ""),
        start_ms=_start_ms(top),
        utc_offset_h=top.integer("utc_offset_h", 5, -12, 14),
        disorder_s=top.number("disorder_s", 60.0, 0.0, 3600.0),
        reference_rse=top.number("reference_rse", 0.005, 0.0, 0.5),
        circle_vertices=top.integer("circle_vertices", 32, 8, 720),
        operators=operators,
        market=_shares(top, "market", op_ids),
        regions=regions,
        devices=_devices(top.sub("devices")),
        mobility=_mobility(top.sub("mobility")),
        visitors=_visitor_params(top.sub("visitors")),
        commutes=tuple(_commute(t) for t in top.items("commute")),
        migrations=tuple(_migration(t) for t in top.items("migration")),
        temporary=_temporary(top.sub("temporary")),
        churn=_churn(top.sub("churn")),
        outline=_points(top, "outline", required=False),
        shapes={},
        text=text,
        source=source,
        foreign=_foreign(top.sub("foreign")) if "foreign" in top.data else None,
        late_share=top.number("late_share", 0.0, 0.0, 1.0),
        late_s=top.number("late_s", 0.0, 0.0, 6 * 3600.0),
        variant=variant,
        variants=("base", *variants),
    )
    top.done()
    _check_references(scenario, top)
    scenario = dataclasses.replace(scenario, shapes=geometry.build_shapes(scenario))
    geometry.check_layout(scenario)
    return scenario


def _start_ms(top: _Table) -> int:
    value = top.raw("start")
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            top.fail("start", f"must be an ISO date-time like 2026-03-02T00:00:00Z, got {value!r}")
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        top.fail("start", "must be a UTC date-time with an offset, e.g. 2026-03-02T00:00:00Z")
    start_ms = round(value.timestamp() * SECOND_MS)
    if start_ms % HOUR_MS:
        top.fail("start", "must fall on a whole hour (UTC)")
    return start_ms


def _operators(top: _Table) -> tuple[Operator, ...]:
    tables = top.items("operators", required=True)
    if not tables:
        top.fail("operators", "needs at least one operator")
    result = []
    for t in tables:
        op_id = t.text("id")
        if not (op_id.isdigit() and len(op_id) in (5, 6)):
            t.fail("id", f"must be MCC+MNC digits like '40101', got {op_id!r}")
        location = t.text("location")
        if location not in ("cell", "latlon"):
            t.fail("location", f"must be 'cell' or 'latlon', got {location!r}")
        result.append(Operator(
            id=op_id,
            name=t.text("name", op_id),
            location=location,
            cell_spacing_urban_km=t.number("cell_spacing_urban_km", 1.5, 0.1, 100.0),
            cell_spacing_rural_km=t.number("cell_spacing_rural_km", 8.0, 0.1, 100.0),
            cell_jitter=t.number("cell_jitter", 0.3, 0.0, 0.5),
            latlon_sd_urban_m=t.number("latlon_sd_urban_m", 50.0, 0.0, 100_000.0),
            latlon_sd_rural_m=t.number("latlon_sd_rural_m", 150.0, 0.0, 100_000.0),
        ))
        t.done()
    ids = [op.id for op in result]
    if len(set(ids)) != len(ids):
        top.fail("operators", f"duplicate operator id in {ids}")
    return tuple(result)


def _weights(t: _Table, key: str, default: Any = _REQUIRED) -> Any:
    """A table of non-negative weights summing to 1 (a string means {that: 1})."""
    value = t.raw(key, default)
    if value is default:
        return value
    if isinstance(value, str):
        return {value: 1.0}
    if not isinstance(value, dict) or not value:
        t.fail(key, "must be a region id or a non-empty table of weights")
    for k, w in value.items():
        if not isinstance(w, int | float) or isinstance(w, bool) or w < 0:
            t.fail(key, f"weight of {k!r} must be a number >= 0, got {w!r}")
    total = sum(value.values())
    if abs(total - 1.0) > 1e-3:
        t.fail(key, f"weights must sum to 1, got {total:g}")
    return {str(k): float(w) / total for k, w in value.items()}


def _shares(t: _Table, key: str, op_ids: list[str], default: Any = _REQUIRED) -> Any:
    """Market shares per operator id (weights summing to 1, keys must be operators)."""
    shares = _weights(t, key, default)
    if shares is default:
        return shares
    for op_id in shares:
        if op_id not in op_ids:
            t.fail(key, f"unknown operator {op_id!r} (operators: {op_ids})")
    return {op_id: shares.get(op_id, 0.0) for op_id in op_ids}


def _mcc_mix(t: _Table, key: str, default: Any) -> Any:
    """A table of foreign home MCC -> weight."""
    mix = _weights(t, key, default)
    if mix is default:
        return mix
    result = {}
    for mcc, w in mix.items():
        if not (mcc.isdigit() and len(mcc) == 3) or mcc == "401":
            t.fail(key, f"keys must be foreign 3-digit MCCs (not 401), got {mcc!r}")
        result[int(mcc)] = w
    return result


def _regions(top: _Table, op_ids: list[str]) -> tuple[Region, ...]:
    tables = top.items("regions", required=True)
    if not tables:
        top.fail("regions", "needs at least one region")
    regions = tuple(_region(t, op_ids) for t in tables)
    ids = [r.id for r in regions]
    for r in regions:
        if ids.count(r.id) > 1:
            raise ValueError(f"{top.source}: {r.path}.id: duplicate region id {r.id!r}")
    _check_tree(regions, top.source)
    return regions


def _region(t: _Table, op_ids: list[str]) -> Region:
    region_id = t.text("id")
    if not region_id or region_id in RESERVED_REGION_IDS:
        t.fail("id", f"must be a non-empty id other than {sorted(RESERVED_REGION_IDS)}")
    shape = _shape(t.sub("shape")) if "shape" in t.data else None
    region = Region(
        id=region_id,
        name=t.text("name", region_id),
        parent=t.text("parent", None),
        urban=t.flag("urban", False),
        population=t.integer("population", None, 0, 1e9),
        registered=t.integer("registered", None, 0, 1e9),
        visitors=t.integer("visitors", 0, 0, 1e8),
        market=_shares(t, "market", op_ids, None),
        visitor_home_mcc=_mcc_mix(t, "visitor_home_mcc", None),
        concentration=t.number("concentration", None, 0.0, 1.5),
        local_share=t.number("local_share", None, 0.0, 1.0),
        shape=shape,
        path=t.path,
    )
    t.raw("shape", None)
    t.done()
    return region


def _check_tree(regions: tuple[Region, ...], source: str) -> None:
    """Parents exist, no cycles; leaves carry population/registered/shape, parents don't."""
    by_id = {r.id: r for r in regions}
    parents = {r.parent for r in regions if r.parent is not None}
    for r in regions:
        if r.parent is not None and r.parent not in by_id:
            raise ValueError(f"{source}: {r.path}.parent: unknown region {r.parent!r}")
        seen = {r.id}
        node = r
        while node.parent is not None:
            if node.parent in seen:
                raise ValueError(f"{source}: {r.path}.parent: cycle through {node.parent!r}")
            seen.add(node.parent)
            node = by_id[node.parent]
        is_leaf = r.id not in parents
        for key in ("population", "registered"):
            given = getattr(r, key) is not None
            if is_leaf and not given:
                raise ValueError(f"{source}: {r.path}.{key}: is required for a leaf region")
            if not is_leaf and given:
                raise ValueError(
                    f"{source}: {r.path}.{key}: only leaf regions carry {key} "
                    "(a parent is the sum of its children)")
        if is_leaf and r.shape is None:
            raise ValueError(f"{source}: {r.path}.shape: is required for a leaf region")


_SHAPE_FIELDS = {
    "circle": ("lat", "lon", "radius_km"),
    "ring": ("lat", "lon", "inner_km", "radius_km"),
    "sector": ("lat", "lon", "radius_km", "from_deg", "to_deg"),
    "circles": ("circles",),
    "polygon": ("points",),
    "voronoi": ("lat", "lon"),
    "rest": (),
}


def _shape(t: _Table) -> ShapeSpec:
    kind = t.text("type")
    if kind not in _SHAPE_FIELDS:
        t.fail("type", f"must be one of {sorted(_SHAPE_FIELDS)}, got {kind!r}")
    required = _SHAPE_FIELDS[kind]
    spec: dict[str, Any] = {"kind": kind}
    if "lat" in required:
        spec["lat"] = t.number("lat", lo=-90.0, hi=90.0)
        spec["lon"] = t.number("lon", lo=-180.0, hi=180.0)
    if "radius_km" in required:
        spec["radius_km"] = t.number("radius_km", lo=0.0, hi=5000.0, lo_open=True)
    if kind in ("ring", "sector"):
        spec["inner_km"] = t.number("inner_km", _REQUIRED if kind == "ring" else 0.0,
                                    0.0, 5000.0)
        if kind == "ring" and spec["inner_km"] <= 0:
            t.fail("inner_km", "must be > 0 for a ring")
        if spec["inner_km"] >= spec["radius_km"]:
            t.fail("inner_km", f"must be < radius_km ({spec['radius_km']:g})")
    if kind == "sector":
        spec["from_deg"] = t.number("from_deg", lo=-360.0, hi=360.0)
        spec["to_deg"] = t.number("to_deg", lo=-360.0, hi=720.0)
        span = (spec["to_deg"] - spec["from_deg"]) % 360.0
        if span <= 0.0:
            t.fail("to_deg", "must differ from from_deg (a sector spans 0 < span < 360 degrees)")
    if kind == "polygon":
        spec["points"] = _points(t, "points", required=True)
        center = t.raw("center", None)
        if center is not None:
            spec["center"] = _point(t, "center", center)
    if kind == "circles":
        spec["circles"] = _circles(t)
    minus = t.raw("minus", [])
    if not isinstance(minus, list) or not all(isinstance(m, str) for m in minus):
        t.fail("minus", "must be a list of region ids")
    spec["minus"] = tuple(minus)
    t.done()
    return ShapeSpec(**spec)


def _point(t: _Table, key: str, value: Any) -> tuple[float, float]:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))
    if not ok or not (-180 <= value[0] <= 180 and -90 <= value[1] <= 90):
        t.fail(key, f"must be [lon, lat] in degrees, got {value!r}")
    return float(value[0]), float(value[1])


def _points(t: _Table, key: str, required: bool) -> tuple[tuple[float, float], ...]:
    value = t.raw(key, _REQUIRED if required else [])
    if not isinstance(value, list) or (value and len(value) < 3):
        t.fail(key, "must be a list of at least 3 [lon, lat] points")
    points = [_point(t, key, v) for v in value]
    if len(points) > 3 and points[0] == points[-1]:
        points = points[:-1]
    return tuple(points)


def _circles(t: _Table) -> tuple[tuple[float, float, float], ...]:
    items = t.items("circles", required=True)
    if not items:
        t.fail("circles", "needs at least one circle")
    result = []
    for c in items:
        result.append((c.number("lat", lo=-90.0, hi=90.0), c.number("lon", lo=-180.0, hi=180.0),
                       c.number("radius_km", lo=0.0, hi=5000.0, lo_open=True)))
        c.done()
    return tuple(result)


def _probs3(t: _Table, key: str, default: tuple[float, float, float]) -> tuple[float, ...]:
    value = t.raw(key, list(default))
    ok = (isinstance(value, list) and len(value) == 3
          and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
                  for v in value))
    if not ok or abs(sum(value) - 1.0) > 1e-3:
        t.fail(key, f"must be 3 probabilities [P(0), P(1), P(2) devices] summing to 1, "
                    f"got {value!r}")
    total = sum(value)
    return tuple(float(v) / total for v in value)


def _devices(t: _Table) -> DeviceParams:
    diurnal = t.raw("diurnal", list(_DEFAULT_DIURNAL))
    ok = (isinstance(diurnal, list) and len(diurnal) == 24
          and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
                  for v in diurnal))
    if not ok or max(diurnal) <= 0:
        t.fail("diurnal", "must be 24 non-negative numbers (local hours 0..23), not all 0")
    params = DeviceParams(
        per_person_urban=_probs3(t, "per_person_urban", (0.05, 0.70, 0.25)),
        per_person_rural=_probs3(t, "per_person_rural", (0.15, 0.72, 0.13)),
        rate_median_per_h=t.number("rate_median_per_h", 1.0, 0.0, 3600.0, lo_open=True),
        rate_sigma=t.number("rate_sigma", 1.2, 0.0, 5.0),
        diurnal=tuple(float(v) for v in diurnal),
        burst_shape=t.number("burst_shape", 0.0, 0.0, 100.0),
    )
    t.done()
    return params


def _mobility(t: _Table) -> MobilityParams:
    params = MobilityParams(
        work_share_urban=t.number("work_share_urban", 0.6, 0.0, 1.0),
        work_share_rural=t.number("work_share_rural", 0.45, 0.0, 1.0),
        local_share_urban=t.number("local_share_urban", 0.35, 0.0, 1.0),
        local_share_rural=t.number("local_share_rural", 0.9, 0.0, 1.0),
        depart_mean_h=t.number("depart_mean_h", 8.0, 3.0, 14.0),
        depart_sd_min=t.number("depart_sd_min", 45.0, 0.0, 300.0),
        return_mean_h=t.number("return_mean_h", 18.5, 4.0, 23.5),
        return_sd_min=t.number("return_sd_min", 60.0, 0.0, 300.0),
        attendance_weekday=t.number("attendance_weekday", 0.92, 0.0, 1.0),
        attendance_weekend=t.number("attendance_weekend", 0.25, 0.0, 1.0),
    )
    if params.return_mean_h <= params.depart_mean_h:
        t.fail("return_mean_h", "must be later than depart_mean_h")
    t.done()
    return params


def _visitor_params(t: _Table) -> VisitorParams:
    params = VisitorParams(
        home_mcc=_mcc_mix(t, "home_mcc", dict(_DEFAULT_VISITOR_MCC)),
        stay_days=t.number("stay_days", 4.0, 0.0, 365.0, lo_open=True),
        gap_days=t.number("gap_days", 1.0, 0.0, 365.0),
        rate_factor=t.number("rate_factor", 0.8, 0.0, 100.0),
        day_out_share=t.number("day_out_share", 0.6, 0.0, 1.0),
    )
    t.done()
    return params


def _temporary(t: _Table) -> TemporaryParams:
    days = t.raw("holiday_days", [7, 28])
    if (not isinstance(days, list) or len(days) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in days)
            or not 1 <= days[0] <= days[1] <= 365):
        t.fail("holiday_days", f"must be [min, max] whole days within 1..365, got {days!r}")
    shift_to = _weights(t, "shift_to") if "shift_to" in t.data else None
    params = TemporaryParams(
        holidays_per_year=t.number("holidays_per_year", 0.0, 0.0, 12.0),
        holiday_days=(days[0], days[1]),
        shift_share=t.number("shift_share", 0.0, 0.0, 0.5),
        shift_days=t.integer("shift_days", 15, 1, 90),
        shift_to=shift_to,
    )
    t.done()
    return params


def _churn(t: _Table) -> ChurnParams:
    params = ChurnParams(lapse_per_year=t.number("lapse_per_year", 0.0, 0.0, 1.0),
                         new_share=t.number("new_share", 0.0, 0.0, 0.5))
    t.done()
    return params


def _days_range(t: _Table, key: str, default: tuple[float, float], lo: float) -> tuple[float, float]:
    value = t.raw(key, list(default))
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))
    if not ok or not lo <= value[0] <= value[1] <= 3650:
        t.fail(key, f"must be [min, max] days with {lo:g} <= min <= max <= 3650, got {value!r}")
    return float(value[0]), float(value[1])


def _foreign(t: _Table) -> ForeignParams:
    stays = _weights(t, "stays")
    for kind in stays:
        if kind not in FOREIGN_KINDS:
            t.fail("stays", f"kinds must be among {list(FOREIGN_KINDS)}, got {kind!r}")
    params = ForeignParams(
        arrivals_per_year=t.number("arrivals_per_year", lo=0.0, hi=1e8),
        stays={kind: stays.get(kind, 0.0) for kind in FOREIGN_KINDS},
        home_mcc=_mcc_mix(t, "home_mcc", None),
        to=_weights(t, "to", None),
        short_days=_days_range(t, "short_days", (1.0, 14.0), 0.5),
        seasonal_days=_days_range(t, "seasonal_days", (30.0, 90.0), 0.5),
        long_days=_days_range(t, "long_days", (91.0, 365.0), 0.5),
        local_sim_share=t.number("local_sim_share", 0.0, 0.0, 1.0),
        local_sim_after_days=_days_range(t, "local_sim_after_days", (3.0, 30.0), 0.0),
        dual_sim_share=t.number("dual_sim_share", 0.0, 0.0, 1.0),
    )
    t.done()
    return params


def _commute(t: _Table) -> Commute:
    flow = Commute(from_id=t.text("from"), to=_weights(t, "to"),
                   share=t.number("share", lo=0.0, hi=1.0))
    t.done()
    return flow


def _migration(t: _Table) -> Migration:
    source = t.raw("from")
    if isinstance(source, str):
        source = [source]
    if not isinstance(source, list) or not source or not all(isinstance(s, str) for s in source):
        t.fail("from", "must be a region id or a non-empty list of region ids")
    flow = Migration(from_ids=tuple(source), to=_weights(t, "to"),
                     per_year=t.number("per_year", lo=0.0, hi=1e8))
    t.done()
    return flow


def _check_references(scenario: Scenario, top: _Table) -> None:
    """Region ids named by flows and shapes exist; commute shares per leaf are <= 1."""
    ids = {r.id for r in scenario.regions}

    def check(path: str, region_id: str) -> None:
        if region_id not in ids:
            raise ValueError(f"{top.source}: {path}: unknown region {region_id!r}")

    for i, c in enumerate(scenario.commutes):
        check(f"commute[{i}].from", c.from_id)
        for to in c.to:
            check(f"commute[{i}].to", to)
    for i, m in enumerate(scenario.migrations):
        for src in m.from_ids:
            check(f"migration[{i}].from", src)
        for to in m.to:
            check(f"migration[{i}].to", to)
    for to in scenario.temporary.shift_to or {}:
        check("temporary.shift_to", to)
    if scenario.foreign is not None:
        for to in scenario.foreign.to or {}:
            check("foreign.to", to)
        if scenario.foreign.to is None and not any(r.visitors for r in scenario.regions):
            raise ValueError(f"{top.source}: foreign.to: is required when no region has "
                             "visitors")
    for r in scenario.regions:
        for other in r.shape.minus if r.shape else ():
            check(f"{r.path}.shape.minus", other)
    for leaf in scenario.leaf_ids:
        chain = scenario.ancestors(leaf)
        total = sum(c.share for c in scenario.commutes if c.from_id in chain)
        if total > 1.0 + 1e-9:
            raise ValueError(f"{top.source}: commute: shares from {leaf!r} add up to "
                             f"{total:g} > 1")

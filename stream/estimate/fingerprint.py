"""What gives a deployment's tallies, checkpoints and snapshots their meaning, as one value.

A tally holds region and factor-region *indices*, H3 cells binned with one cell plan and device
counts under one set of engine options; a checkpoint holds device state keyed with one key and
placed by one partition count. Both only mean something under the settings that made them, and
two workers whose settings differ must never have their tallies summed. A :class:`Fingerprint`
names every such setting (a *part*) with a short value: the option itself (``15``, ``6h``) or,
for a data file, a short digest with a count (``4 regions, 3f9a1c2b7d4e``). Parts have a
*scope*:

- :data:`TALLY` parts give tallies and checkpoints their meaning (regions, cell plan, engine
  options, windows, partition count, key). Tallies and checkpoints carry them; a mismatch is
  refused.
- :data:`PUBLISH` parts only enter when a merged tally becomes a snapshot (calibration,
  registry, ``--k``, ``--model-rse``, ``--sibling-away-rse``, ``--resident-model-rse``,
  ``--transition-rse``, ``--gap-threshold``, region names): they are a property of the
  deployment, pinned once in Redis by the first worker, so the snapshot never depends on which
  worker publishes it. (``--away-rse`` is a publish setting too, but predates its own part: it
  stays in the tally part ``options.other``, which older checkpoints were written with.)

:func:`describe_difference` names what differs, in the option's words, for error messages.
No I/O here: :func:`deployment_fingerprint` hashes what is already loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from stream.estimate.engine_options import EngineOptions, duration_text, footprint_prior
from stream.estimate.windows import WindowSettings
from stream.sources.reference_files import Reference

TALLY = "tally"
PUBLISH = "publish"
DIGEST_HEX = 12
"""Hex digits of a data file's digest in a part's value (48 bits: a collision by chance between
two files of one deployment is not a practical concern)."""


@dataclass(frozen=True)
class Part:
    """One setting of a fingerprint: ``name`` (stable, stored), ``label`` (what it is, in the
    command line's words, for messages) and ``scope`` (:data:`TALLY` or :data:`PUBLISH`)."""

    name: str
    label: str
    scope: str


PARTS: tuple[Part, ...] = (
    Part("regions.ids", "the region ids of --regions", TALLY),
    Part("regions.order", "the order of the features in --regions", TALLY),
    Part("regions.shapes", "the outlines or parents of the regions in --regions", TALLY),
    Part("cells", "the cell plan (--cells)", TALLY),
    Part("regions.rule", "how a ping is placed in a region", TALLY),
    Part("movers", "the stale-mover tally rows (this version's rule)", TALLY),
    Part("res", "--res", TALLY),
    Part("horizon", "--horizon", TALLY),
    Part("activity", "--activity", TALLY),
    Part("night", "--night", TALLY),
    Part("nights", "--nights", TALLY),
    Part("min_nights", "--min-nights", TALLY),
    Part("timezone", "--timezone", TALLY),
    Part("home_mcc", "--home-mcc", TALLY),
    Part("migration", "--move-window, --move-min-nights, --confirm-nights, --lapse-nights",
         TALLY),
    Part("foreign", "the foreign-SIM stays and their MCC table (--mcc-table)", TALLY),
    Part("every", "--every", TALLY),
    Part("lateness", "--lateness", TALLY),
    Part("stream_time", "the stream-time rules (watermark devices, jump and future guards)",
         TALLY),
    Part("options.other", "other engine options", TALLY),
    Part("partitions", "the partition count of the pings topic", TALLY),
    Part("key", "the pseudonymization key (its public id)", TALLY),
    Part("regions.labels", "the names or urban flags of the regions in --regions", PUBLISH),
    Part("calibration", "the calibration (--calibration)", PUBLISH),
    Part("registry", "the registry (--registry)", PUBLISH),
    Part("k", "--k", PUBLISH),
    Part("model_rse", "--model-rse", PUBLISH),
    Part("sibling_away_rse", "--sibling-away-rse", PUBLISH),
    Part("resident_model_rse", "--resident-model-rse", PUBLISH),
    Part("transition_rse", "--transition-rse", PUBLISH),
    Part("gap_threshold", "--gap-threshold", PUBLISH),
    Part("foreign.publish", "the per-country factors (--country-factors) and countries "
         "(--foreign-countries) of foreign SIMs", PUBLISH),
)
"""Every part, in the order messages list them."""

_PART = {p.name: p for p in PARTS}


@dataclass(frozen=True)
class Fingerprint:
    """A frozen description of settings: part name → short value (in :data:`PARTS` order;
    names this version does not know, read from a newer worker's record, come last).

    Equal fingerprints mean equal settings; :attr:`digest` is a short id of the whole.
    """

    parts: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, values: Mapping[str, str]) -> Fingerprint:
        """A fingerprint of ``values`` (part name → value), put in the canonical order."""
        known = [(p.name, str(values[p.name])) for p in PARTS if p.name in values]
        extra = sorted((k, str(v)) for k, v in values.items() if k not in _PART)
        return cls(tuple(known + extra))

    def as_dict(self) -> dict[str, str]:
        """Part name → value."""
        return dict(self.parts)

    def __getitem__(self, name: str) -> str:
        return self.as_dict()[name]

    def scope(self, scope: str) -> Fingerprint:
        """Only the parts of ``scope`` (:data:`TALLY` or :data:`PUBLISH`); unknown parts are
        kept in both (a newer worker's part is never silently ignored)."""
        return Fingerprint(tuple((k, v) for k, v in self.parts
                                 if k not in _PART or _PART[k].scope == scope))

    def tally(self) -> Fingerprint:
        """The parts that give tallies and checkpoints their meaning."""
        return self.scope(TALLY)

    @property
    def digest(self) -> str:
        """16 hex digits identifying the whole fingerprint."""
        return hashlib.blake2b(self.to_json().encode(), digest_size=8).hexdigest()

    def to_json(self) -> str:
        """Compact JSON object (part name → value), canonical order, for Redis and blobs."""
        return json.dumps(dict(self.parts), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Fingerprint:
        """Inverse of :meth:`to_json`; raises ``ValueError`` for anything but a JSON object of
        strings."""
        doc = json.loads(text)
        if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in doc.items()):
            raise ValueError("a fingerprint is a JSON object of strings")
        return cls.of(doc)


def describe_difference(a: Fingerprint, b: Fingerprint, a_name: str = "here",
                        b_name: str = "there") -> str:
    """What differs between ``a`` and ``b``, one clause per part, ``""`` when they are equal.

    ``--k is 1 here, 15 there; the order of the features in --regions is 5d1e2f3a9b0c here,
    77a0c1b2d3e4 there``. A part only one side has is ``not recorded`` on the other.
    """
    da, db = a.as_dict(), b.as_dict()
    names = [p.name for p in PARTS] + sorted((set(da) | set(db)) - set(_PART))
    clauses = []
    for name in names:
        va, vb = da.get(name), db.get(name)
        if va == vb:
            continue
        if name == "options.other" and va is not None and vb is not None:
            clauses += _other_differences(va, vb, a_name, b_name)
            continue
        label = _PART[name].label if name in _PART else f"setting {name!r}"
        clauses.append(f"{label} is {va if va is not None else 'not recorded'} {a_name}, "
                       f"{vb if vb is not None else 'not recorded'} {b_name}")
    return "; ".join(clauses)


_OTHER_FLAGS = {"transitions": ("--no-transitions", {"True": "not given", "False": "given"})}
"""Options of ``options.other`` whose command-line form is a flag: its name and the words for
its values."""


def _other_differences(a: str, b: str, a_name: str, b_name: str) -> list[str]:
    """The ``options.other`` part (``name=value, ...``, :func:`_others`) as one clause per
    option that differs, in command-line terms: ``--stale is 1h here, 10m there``."""
    def parse(text: str) -> dict[str, str]:
        parts = re.split(r"(?:^|, )(\w+)=", text)
        return dict(zip(parts[1::2], parts[2::2], strict=True))

    va, vb = parse(a), parse(b)
    clauses = []
    for key in sorted(set(va) | set(vb)):
        x, y = va.get(key), vb.get(key)
        if x == y:
            continue
        if key in _OTHER_FLAGS:
            flag, words = _OTHER_FLAGS[key]
            label, x, y = flag, words.get(x or "", x), words.get(y or "", y)
        else:
            label = "--" + key.removesuffix("_ms").replace("_", "-")
            if key.endswith("_ms"):
                x, y = (duration_text(int(v)) if v and v.isdigit() else v for v in (x, y))
        clauses.append(f"{label} is {x if x is not None else 'not recorded'} {a_name}, "
                       f"{y if y is not None else 'not recorded'} {b_name}")
    return clauses


def _digest(chunks: Iterable[bytes]) -> str:
    h = hashlib.blake2b(digest_size=DIGEST_HEX // 2)
    for c in chunks:
        h.update(len(c).to_bytes(8, "little"))
        h.update(c)
    return h.hexdigest()


def _text(*values: object) -> bytes:
    return "\x1f".join("" if v is None else str(v) for v in values).encode()


def _array(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    return _text(a.dtype.str, a.shape) + a.tobytes()


def region_parts(reference: Reference) -> dict[str, str]:
    """The regions file's parts: ids (as a set), their order, outlines with parents (by id),
    names with urban flags (by id)."""
    regions = reference.regions.regions
    by_id = sorted(regions, key=lambda r: r.id)
    n = f"{len(regions)} regions"
    return {
        "regions.ids": f"{n}, {_digest(_text(r.id) for r in by_id)}",
        "regions.order": _digest(_text(r.id) for r in regions),
        "regions.shapes": _digest(c for r in by_id for c in (
            _text(r.id, r.parent, len(r.rings)), *(_array(np.asarray(ring, np.float64))
                                                   for ring in r.rings))),
        "regions.labels": _digest(_text(r.id, r.name, r.urban) for r in by_id),
    }


def reference_parts(reference: Reference) -> dict[str, str]:
    """The data files' parts: regions, cell plan, calibration and registry (``none`` when not
    given)."""
    out = region_parts(reference)
    plan = reference.cell_plan
    out["cells"] = "none" if plan is None else f"{len(plan.cell)} cells, " + _digest(
        [_text(*plan.operator), _text(*plan.cell), _array(plan.lat), _array(plan.lon),
         _array(plan.azimuth_deg), _array(plan.range_m)])
    cal = reference.calibration
    out["calibration"] = "none" if cal is None else f"{len(cal.rows)} rows, " + _digest(
        _text(r.region, r.operator, repr(float(r.factor)), repr(float(r.rse)))
        for r in sorted(cal.rows, key=lambda r: (r.region, r.operator)))
    reg = reference.registry
    out["registry"] = "none" if reg is None else f"{len(reg)} regions, " + _digest(
        _text(rid, reg[rid]) for rid in sorted(reg))
    return out


_NAMED_OPTIONS = frozenset({
    "res", "horizon_ms", "activity_ms", "night_start_h", "night_length_h", "nights", "min_nights",
    "timezone", "home_mcc", "k", "model_rse", "sibling_away_rse", "resident_model_rse",
    "transition_rse",
    "move_window_nights", "move_min_nights", "confirm_nights", "lapse_nights", "foreign",
    "mcc_table", "country_factors", "foreign_countries", "footprints"})
"""Engine options with a part of their own; any other (a newer option) lands in
``options.other``, so no option is ever left out of the fingerprint."""
_NAMED_WINDOWS = frozenset({"every_ms", "lateness_ms"})


REGION_RULE = "position: exact point-in-polygon of the ping's own point (lat/lon or plan row)"
"""The region rule of this version (:mod:`estimators.cells`); tallies of workers placing pings
by another rule (before: the H3 cell's centre) are never summed with these."""


MOVER_RULE = "mover rows by 10-minute age steps; devices without a home move with the movers"
"""The stale-mover rule's tally rows in this version (:mod:`estimators.routine`): tallies of
workers with another rule (before: hour steps, no rows of devices without a home) are never
summed with these, whatever their --stale."""


def region_rule(options: EngineOptions, reference: Reference) -> str:
    """The ``regions.rule`` part: :data:`REGION_RULE` and how border cells' devices are placed
    (``--footprints``, as in force: :func:`footprint_prior`; ``site``, or no cell plan: just
    :data:`REGION_RULE`, as before footprints); for ``reference``, the digest of
    the calibration's reference population too (it then decides which region a device at a
    border cell is tallied in, while the ``calibration`` part is only a publish part)."""
    rule, people = footprint_prior(options, reference)
    if rule == "site" or reference.cell_plan is None:
        return REGION_RULE  # every device at its cell's site: the rule of earlier versions
    text = f"{REGION_RULE}; border cells: {rule}"
    if rule == "reference" and people:
        text += f" by {len(people)} regions' people, " + _digest(
            _text(rid, repr(float(people[rid]))) for rid in sorted(people))
    return text


def _others(values: dict[str, object], named: frozenset[str]) -> str:
    rest = {k: v for k, v in sorted(values.items()) if k not in named}
    return ", ".join(f"{k}={v!r}" for k, v in rest.items()) or "none"


def foreign_parts(options: EngineOptions) -> dict[str, str]:
    """The foreign-SIM parts: whether stays are followed and the MCC table (by content), and
    the factors and country list they are published with. Reads the two files (small); raises
    :class:`~stream.contract.InputError` for a bad one."""
    table = options.country_table()
    if table is None:
        return {"foreign": "off", "foreign.publish": "off"}
    factors = options.factors(table)
    fixed = ",".join(options.foreign_countries) if options.foreign_countries else "top 10"
    return {
        "foreign": f"{len(table.countries)} countries, "
                   + _digest([_text(*table.countries), _array(table.by_mcc)]),
        "foreign.publish": f"{len(factors)} factors, " + _digest(
            _text(f.country, repr(float(f.factor)), repr(float(f.rse))) for f in factors)
                   + f"; {fixed}",
    }


def deployment_fingerprint(options: EngineOptions, windows: WindowSettings,
                           reference: Reference, partitions: int, key_id: str,
                           gap_threshold: float) -> Fingerprint:
    """Every setting that gives a live deployment's tallies, checkpoints and snapshots their
    meaning. ``key_id`` is the key's public id (:func:`stream.estimate.checkpoint.key_id`),
    never the key."""
    o = options
    values = {
        **reference_parts(reference),
        "regions.rule": region_rule(o, reference),
        "movers": MOVER_RULE,
        "res": str(o.res), "horizon": duration_text(o.horizon_ms),
        "activity": duration_text(o.activity_ms),
        "night": f"{o.night_start_h:g}h for {o.night_length_h:g}h",
        "nights": str(o.nights), "min_nights": str(o.min_nights), "timezone": o.timezone,
        "home_mcc": str(o.home_mcc),
        "migration": f"{o.move_window_nights}/{o.move_min_nights}/{o.confirm_nights}/"
                     f"{o.lapse_nights} nights",
        "every": duration_text(windows.every_ms), "lateness": duration_text(windows.lateness_ms),
        "stream_time": _others(asdict(windows), _NAMED_WINDOWS),
        "options.other": _others(asdict(o), _NAMED_OPTIONS),
        "partitions": str(partitions), "key": key_id,
        "k": str(o.k), "model_rse": repr(float(o.model_rse)),
        "sibling_away_rse": repr(float(o.sibling_away_rse)),
        "resident_model_rse": repr(float(o.resident_model_rse)),
        "transition_rse": repr(float(o.transition_rse)),
        "gap_threshold": repr(float(gap_threshold)),
        **foreign_parts(o),
    }
    return Fingerprint.of(values)

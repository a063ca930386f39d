"""Arrivals from abroad as the JSON object defacto publishes (``schemas/flows.schema.json``,
``topic: "foreign"``), the foreign long-stayers line of the snapshot, and a table.

One object per period (ISO week or calendar month) of the foreign-SIM ledgers of
:mod:`estimators.foreign`: arrivals, departures, stock at the period's end (so far, for an open
one), nights spent and the two flags among the stock (``long_stay``: at least 90 of the last
180 nights; ``usual_resident``: at least 183 of the last 365), per country of the SIM (small
countries rolled into ``other`` before any k test, ``*`` = all) and region of stay (parents are
subtree sums, ``*`` = the whole country), departures, stock and nights also per stay class.

Each figure is ``{"devices", "people", "lo", "hi"}``: devices (foreign SIMs; device-nights for
``nights``) with disclosure control (``null`` under k, complementary suppression), and people
with a 90 % interval only for the countries that have a per-country factor (``null`` otherwise;
the ``*`` row only when every country has one). ``unit`` says which the document is in. A
period's arrivals are final once it is ``closed``; departures, nights, stock and flags once it is
``final`` (settled, ``revisable_until`` passed). Method: ``docs/METHOD.md`` §10.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np

from estimators.foreign import (
    ALL,
    CLASSES,
    OTHER,
    CountryFactor,
    ForeignConfig,
    ForeignEstimate,
    ForeignFigureConfig,
    ForeignPeriod,
    ForeignTally,
    estimate_foreign,
)
from estimators.regions import RegionSet
from estimators.warmup import PeriodWarmUp, observed_whole_from
from stream.publish.snapshot import period_warming_doc
from stream.publish.table import fixed_width, fmt, observed_clause
from stream.timefmt import iso_utc

TOPIC = "foreign"
"""The ``topic`` field that tells a foreign-SIM document from a migration one in flows.jsonl."""
DATING = "stay"
"""Foreign documents' ``dating``: arrivals by their stay's first ping's day, departures by its
last ping's day (readers that select migration periods by ``dating`` skip them)."""
MEASURES = ("arrivals", "departures", "stock", "nights", "long_stay", "usual_resident")
"""The measures of a document, in order."""
BY_CLASS = ("departures", "stock", "nights")
"""The measures that also come per stay class."""
SNAPSHOT_FIELD = "week"
"""The published field whose stock (as of the latest night evaluated) gives the snapshot's
foreign long-stayers line."""


def _night_date(night: int) -> str | None:
    return None if night < 0 else (date(1970, 1, 1) + timedelta(days=night)).isoformat()


def _counts(values: np.ndarray) -> Any:
    """An array of figures as nested lists of whole numbers, None where not finite (suppressed
    or unknown), converted once per array instead of once per figure."""
    finite = np.isfinite(values)
    out = np.where(finite, np.rint(values), 0).astype(np.int64).astype(object)
    out[~finite] = None
    return out.tolist()


Counts = dict[str, tuple[Any, Any, Any, Any]]
"""Per measure, its ``devices``, ``people``, ``lo`` and ``hi`` as nested lists (:func:`_counts`)."""


def _all_counts(fe: ForeignEstimate) -> Counts:
    return {name: (_counts(f.devices), _counts(f.people), _counts(f.lo), _counts(f.hi))
            for name, f in fe.figures.items()}


def _figure(counts: Counts, name: str, idx: tuple[int, ...]) -> dict[str, int | None]:
    out = []
    for a in counts[name]:
        for i in idx:
            a = a[i]
        out.append(a)
    return dict(zip(("devices", "people", "lo", "hi"), out, strict=True))


def _line(counts: Counts, c: int, r: int, classes: bool) -> dict[str, Any]:
    """The measures of one (country row, region column); with ``classes``, ``by_class`` too."""
    all_k = len(CLASSES)
    out: dict[str, Any] = {}
    for name in MEASURES:
        out[name] = _figure(counts, name, (c, r, all_k) if name in BY_CLASS else (c, r))
    if classes:
        out["by_class"] = {name: {cls: _figure(counts, name, (c, r, k))
                                  for k, cls in enumerate(CLASSES)} for name in BY_CLASS}
    return out


def foreign_document(fe: ForeignEstimate, regions: RegionSet, at_ms: int,
                     figures: ForeignFigureConfig, stays: ForeignConfig,
                     warm: PeriodWarmUp | None, factors: Sequence[CountryFactor] = ()
                     ) -> dict[str, Any]:
    """The published object of one period's foreign-SIM figures (``topic: "foreign"`` in
    ``schemas/flows.schema.json``); ``warm``: from which night arrivals are warm (None:
    nothing observed, every period warming)."""
    p = fe.period
    first, last = p.nights_range
    observed_from = observed_whole_from(warm, p.first_night, last)
    n_c, n_r = len(fe.countries) - 1, len(fe.regions) - 1
    with_factor = sorted({f.country for f in factors})
    people_rows = [c for c in fe.countries[:-1]
                   if c in with_factor or ALL in with_factor]
    if people_rows and len(people_rows) == n_c:
        people_rows.append(ALL)
    counts = _all_counts(fe)
    out_regions: dict[str, Any] = {}
    for r, rid in enumerate(regions.ids):
        line = _line(counts, n_c, r, classes=True)
        out_regions[rid] = {"name": regions.names[r], **line,
                            "countries": {country: _line(counts, c, r, classes=False)
                                          for c, country in enumerate(fe.countries[:-1])}}
    return {
        "topic": TOPIC, "dating": DATING,
        "period": p.label, "kind": p.kind,
        "first_night": _night_date(first), "last_night": _night_date(last),
        "closed": p.closed, "final": p.settled,
        "complete": p.complete and 0 <= observed_from <= first,
        "revisable_until": _night_date(p.settles_on),
        "observed_from": _night_date(observed_from),
        "observed_until": _night_date(p.last_night),
        "warming_up": period_warming_doc(warm, first, ("arrivals",)),
        "at": iso_utc(at_ms),
        "unit": "people" if people_rows else "devices",
        "people_countries": people_rows,
        "settings": {"k": figures.k, "model_rse": figures.model_rse,
                     "top_countries": figures.top_countries,
                     "min_country_devices": figures.min_devices,
                     "countries": list(figures.countries) if figures.countries is not None
                     else None,
                     "gap_h": stays.gap_h, "region_nights": stays.region_nights,
                     "long_stay": list(stays.visa), "usual_resident": list(stays.resident)},
        "countries": list(fe.countries),
        "classes": list(CLASSES),
        "nights_evaluated": p.nights_evaluated,
        "totals": {country: _line(counts, c, n_r, classes=True)
                   for c, country in enumerate(fe.countries)},
        "regions": out_regions,
    }


def period_foreign(period: ForeignPeriod, countries: Sequence[str], regions: RegionSet,
                   at_ms: int, figures: ForeignFigureConfig, stays: ForeignConfig,
                   warm: PeriodWarmUp, factors: Sequence[CountryFactor] = ()
                   ) -> dict[str, Any]:
    """A period's published document from its (merged) device counts; ``warm``: from which
    night arrivals are warm (:meth:`~estimators.engine.Engine.period_warm_up`)."""
    fe = estimate_foreign(period, countries, regions, factors, figures)
    return foreign_document(fe, regions, at_ms, figures, stays, warm, factors)


def published_foreign(tally: ForeignTally, regions: RegionSet, at_ms: int,
                      figures: ForeignFigureConfig, stays: ForeignConfig, warm: PeriodWarmUp,
                      factors: Sequence[CountryFactor] = (),
                      fields: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The documents of a (merged) tally's published periods, by field (``week``, ``month``:
    open; ``week:closed``, ``month:closed``: the latest closed; ``week:settled``,
    ``month:settled``: the latest settled), as ``P:foreign`` holds them; ``fields``: only
    these."""
    return {name: period_foreign(p, tally.countries, regions, at_ms, figures, stays, warm,
                                 factors)
            for name, p in tally.published().items() if fields is None or name in fields}


def usual_residents(doc: dict[str, Any] | None, region_ids: Sequence[str]
                    ) -> dict[str, dict[str, int | None]]:
    """Per region, the foreign-SIM usual residents (at least 183 of the last 365 nights in
    stays) among the stock of ``doc`` (an open period's document: as of the latest night),
    all countries: ``devices`` and ``people`` (``null``: suppressed, or no factor)."""
    empty = {"devices": None, "people": None}
    if doc is None:
        return {rid: dict(empty) for rid in region_ids}
    return {rid: ({"devices": doc["regions"][rid]["usual_resident"]["devices"],
                   "people": doc["regions"][rid]["usual_resident"]["people"]}
                  if rid in doc["regions"] else dict(empty)) for rid in region_ids}


def add_foreign_line(snapshot: dict[str, Any], docs: dict[str, dict[str, Any]] | None) -> None:
    """Put the foreign long-stayers line beside each region's resident population in a
    snapshot: ``foreign_usual_residents`` (devices, ``null`` under k) and
    ``foreign_usual_residents_people`` (``null`` without a factor), from the open week's
    document (``docs`` None: foreign stays are off, the fields are left out)."""
    if docs is None:
        return
    line = usual_residents(docs.get(SNAPSHOT_FIELD), list(snapshot["regions"]))
    for rid, fig in snapshot["regions"].items():
        fig["foreign_usual_residents"] = line[rid]["devices"]
        fig["foreign_usual_residents_people"] = line[rid]["people"]


def foreign_table(doc: dict[str, Any], top: int = 12) -> str:
    """A readable fixed-width table of one period: arrivals, departures and stock by country
    (all regions), then stock by stay class, then the long-stayers per region."""
    unit = doc["unit"]
    key = "people" if unit == "people" else "devices"

    def val(fig: dict[str, int | None]) -> str:
        return fmt(fig[key])

    rows = [["country", "arrivals", "departures", "stock", "long stay", "usual resident"]]
    for country in doc["countries"][:top]:
        t = doc["totals"][country]
        rows.append([country, val(t["arrivals"]), val(t["departures"]), val(t["stock"]),
                     val(t["long_stay"]), val(t["usual_resident"])])
    total = doc["totals"][ALL]
    classes = [["stay class"] + list(doc["classes"]),
               ["stock"] + [val(total["by_class"]["stock"][c]) for c in doc["classes"]]]
    regions = [["region", "stock", "long stay", "usual resident"]]
    for rid, r in doc["regions"].items():
        if r["stock"]["devices"] is None and r["usual_resident"]["devices"] is None:
            continue
        regions.append([f"{r['name']} ({rid})", val(r["stock"]), val(r["long_stay"]),
                        val(r["usual_resident"])])
    state = ("final" if doc["final"] else "closed, revisable until " + doc["revisable_until"]
             if doc["closed"] else f"so far, to {doc['observed_until']}")
    state += observed_clause(doc)
    warming = doc["warming_up"]
    if warming["arrivals"]:
        state += ("; warming up: arrivals" + (f" before {warming['arrivals_ready_from']}"
                                              if warming["arrivals_ready_from"] else "")
                  + " include SIMs that were in the country already")
    k = doc["settings"]["k"]
    return "\n".join([
        f"Foreign SIMs {doc['period']} ({doc['first_night']} .. {doc['last_night']}; {state}): "
        f"{unit}; — = fewer than {k} devices; {OTHER} = smaller countries, {ALL} = all",
        fixed_width(rows), fixed_width(classes), fixed_width(regions)])


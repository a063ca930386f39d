"""Migration flows as the JSON object defacto publishes (``schemas/flows.schema.json``), and a table.

One object per period (ISO week or calendar month) and dating: OD flows, inflow / outflow / net
migration per region with 90 % intervals, the rural balance, and the device bookkeeping behind
them (UR stock at the start and end, housed, lapsed, reactivated, confirmed moves, returns).
Dated by ``detected`` night, a period is final when it closes; dated by ``effective`` night
(when the move happened), relocations keep arriving for a window after it ends, so it is
revisable until ``revisable_until`` and final after. Figures
resting on fewer than k devices are ``null``; see :mod:`estimators.flows` for the method and
the disclosure rules, and ``docs/METHOD.md`` §9.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from typing import Any

import numpy as np

from estimators.estimate import Estimate
from estimators.flows import (
    FlowConfig,
    FlowEstimate,
    between_parts,
    bookkeeping_suppression,
    crossing,
    estimate_flows,
)
from estimators.migration import MigrationConfig, PeriodCounts, period_nights
from estimators.regions import RegionSet
from estimators.warmup import PeriodWarmUp, observed_whole_from
from stream.publish.snapshot import count_or_null, period_warming_doc
from stream.publish.table import fixed_width, fmt, observed_clause
from stream.timefmt import iso_utc

BOOKKEEPING = ("stock_start", "stock_end", "in_devices", "out_devices", "housed", "lapsed",
               "reactivated")
"""The terms of the stock-flow identity per region, in devices."""


def _ratio(x: float) -> float | None:
    return None if not math.isfinite(x) else round(x, 3)


def _night_date(night: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=night)).isoformat()


def flows_document(fe: FlowEstimate, regions: RegionSet, at_ms: int, k: int,
                   migration: MigrationConfig, warm: PeriodWarmUp | None) -> dict[str, Any]:
    """The published object of one period's flows (``schemas/flows.schema.json``); ``warm``:
    from which night flows are warm (None: nothing observed, every period warming)."""
    p = fe.period
    first, last = period_nights(p.kind, p.number)
    observed_from = observed_whole_from(warm, p.first_night, last)
    sub = regions.subtree.astype(np.int64)
    moved_in, moved_out = crossing(regions, p.relocations)
    confirmed_in, confirmed_out = crossing(regions, p.confirmed)
    _, returns_out = crossing(regions, p.returns)
    stock_start, stock_end = sub @ p.start_stock, sub @ p.end_stock
    housed, lapsed, reactivated = sub @ p.housed, sub @ p.lapsed, sub @ p.reactivated
    cohort = sub @ p.cohort
    totals = {"stock_start": stock_start, "stock_end": stock_end, "in_devices": moved_in,
              "out_devices": moved_out, "housed": housed, "lapsed": lapsed,
              "reactivated": reactivated, "cohort": cohort, "confirmed_in": confirmed_in,
              "confirmed_out": confirmed_out, "returns": returns_out}
    own = {"stock_start": p.start_stock, "stock_end": p.end_stock, "housed": p.housed,
           "lapsed": p.lapsed, "reactivated": p.reactivated, "cohort": p.cohort}
    moved, confirmed = between_parts(regions, p.relocations), between_parts(regions, p.confirmed)
    between = {"in_devices": moved, "out_devices": moved, "confirmed_in": confirmed,
               "confirmed_out": confirmed, "returns": between_parts(regions, p.returns)}
    hidden = bookkeeping_suppression(regions, own, totals, k, between)
    out_regions: dict[str, Any] = {}
    for i, rid in enumerate(regions.ids):
        books = {name: None if hidden[name][i] else int(totals[name][i]) for name in BOOKKEEPING}
        out_regions[rid] = {
            "name": regions.names[i],
            "inflow": count_or_null(fe.inflow[i]), "outflow": count_or_null(fe.outflow[i]),
            "net": count_or_null(fe.net[i]), "net_lo": count_or_null(fe.net_lo[i]),
            "net_hi": count_or_null(fe.net_hi[i]), "net_per_1000": _ratio(fe.net_per_1000[i]),
            "net_per_1000_lo": _ratio(fe.net_per_1000_lo[i]),
            "net_per_1000_hi": _ratio(fe.net_per_1000_hi[i]),
            **books,
            **{name: None if hidden[name][i] else int(totals[name][i])
               for name in ("cohort", "confirmed_in", "confirmed_out", "returns")},
        }
    od = []
    for s, t in zip(*np.nonzero(~np.isnan(fe.od)), strict=True):
        if s == t:
            continue
        od.append({"from": regions.ids[s], "to": regions.ids[t], "people": count_or_null(fe.od[s, t]),
                   "lo": count_or_null(fe.od_lo[s, t]), "hi": count_or_null(fe.od_hi[s, t]),
                   "devices": int(fe.od_devices[s, t])})
    od.sort(key=lambda c: (-c["people"], c["from"], c["to"]))
    return {
        "period": p.label, "kind": p.kind, "dating": p.dating, "first_night": _night_date(first),
        "last_night": _night_date(last), "final": p.final,
        "complete": p.complete and 0 <= observed_from <= first,
        "revisable_until": _night_date(p.settles_on) if p.dating == "effective" else None,
        "observed_from": _night_date(observed_from) if observed_from >= 0 else None,
        "observed_until": _night_date(p.last_night) if p.last_night >= 0 else None,
        "warming_up": period_warming_doc(warm, first, ("relocations", "confirmed")),
        "at": iso_utc(at_ms),
        "settings": {"window_nights": migration.window_nights,
                     "min_nights": migration.min_nights,
                     "confirm_nights": migration.confirm_nights,
                     "lapse_nights": migration.lapse_nights, "k": k},
        "regions": out_regions,
        "od": od,
        "rural": {
            "rural_to_urban": count_or_null(fe.rural_to_urban),
            "urban_to_rural": count_or_null(fe.urban_to_rural),
            "balance": count_or_null(fe.rural_balance),
            "balance_lo": count_or_null(fe.rural_balance_lo),
            "balance_hi": count_or_null(fe.rural_balance_hi),
            "rural_to_urban_devices": count_or_null(fe.rural_to_urban_devices),
            "urban_to_rural_devices": count_or_null(fe.urban_to_rural_devices),
        },
    }


def period_flows(period: PeriodCounts, estimate: Estimate, regions: RegionSet, k: int,
                 migration: MigrationConfig, warm: PeriodWarmUp,
                 model_rse_flow: float = FlowConfig.model_rse_flow) -> dict[str, Any]:
    """A period's published flows, scaled with the residents of ``estimate``; ``warm``: from
    which night flows are warm (:meth:`~estimators.engine.Engine.period_warm_up`)."""
    assert estimate.resident_by_home is not None and estimate.resident_by_home_rse is not None
    fe = estimate_flows(period, regions, estimate.resident_by_home, estimate.resident_by_home_rse,
                        FlowConfig(k=k, model_rse_flow=model_rse_flow),
                        resident_shown=~np.isnan(estimate.resident))
    return flows_document(fe, regions, estimate.at_ms, k, migration, warm)


def flows_history(published: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The history entries of the final periods among published flow documents: field
    ``<kind>:<dating>:<period>`` → JSON of ``period``, ``kind``, ``dating``, ``first_night`` and
    the ``rural`` balance (a final period never changes, so rewriting an entry is harmless)."""
    out = {}
    for doc in published.values():
        if doc["final"]:
            entry = {key: doc[key] for key in ("period", "kind", "dating", "first_night", "rural")}
            out[f"{doc['kind']}:{doc['dating']}:{doc['period']}"] = json.dumps(
                entry, separators=(",", ":"))
    return out


def flows_table(doc: dict[str, Any]) -> str:
    """A readable fixed-width table of one period's flows per region, and the rural balance."""
    rows = [["region", "inflow", "outflow", "net", "90% interval", "per 1,000", "housed", "lapsed"]]
    for rid, r in doc["regions"].items():
        if rid == "unassigned" and r["inflow"] is None and r["outflow"] is None:
            continue
        interval = "—" if r["net_lo"] is None else f"{r['net_lo']:,}–{r['net_hi']:,}"
        per = "—" if r["net_per_1000"] is None else f"{r['net_per_1000']:+.2f}"
        rows.append([f"{r['name']} ({rid})", fmt(r["inflow"]), fmt(r["outflow"]), fmt(r["net"]),
                     interval, per, fmt(r["housed"]), fmt(r["lapsed"])])
    state = ("final" if doc["final"] else f"so far, to {doc['observed_until']}") + \
        observed_clause(doc)
    warming = doc["warming_up"]
    if warming["relocations"]:
        state += ("; warming up: fewer nights observed than two "
                  f"{doc['settings']['window_nights']}-night windows, so relocations are "
                  "undercounted" + (f" (periods from {warming['relocations_ready_from']} on "
                                    "are warm)" if warming["relocations_ready_from"] else ""))
    elif warming["confirmed"]:
        state += ("; warming up: confirmed moves and returns are undercounted until periods from "
                  f"{warming['confirmed_ready_from']} on")
    lines = [f"Migration {doc['period']} ({doc['first_night']} .. {doc['last_night']}; {state}): "
             f"people; — = fewer than {doc['settings']['k']} devices", fixed_width(rows)]
    rural = doc["rural"]
    if rural["balance"] is not None:
        lines.append(f"rural balance {rural['balance']:+,} ({rural['balance_lo']:,}–"
                     f"{rural['balance_hi']:,}); rural→urban {rural['rural_to_urban']:,}, "
                     f"urban→rural {rural['urban_to_rural']:,}")
    else:
        lines.append("rural balance: — (fewer than k devices moved between rural and urban regions)")
    return "\n".join(lines)

"""What disclosure control hides in the migration flow tables (a benchmark: prints, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/disclosure_flows.py [--scale 0.01] [--days 100] [--k 15]

Runs ``bench/migration.py``'s simulation (the ``astana`` scenario with migration x10, holidays,
shift workers and SIM churn; calibrated on day 1), takes every period dated by effective night
when it settles (with the resident estimate of that moment, as it is published) and prints the
share of published values that are ``null``: the per-region figures of the flow documents
(:func:`stream.publish.flows.flows_document`) and the non-zero OD cells, and the resident
regions hidden at the end. Run it in two checkouts to compare disclosure rules.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.migration import _run, _variant
from estimators.flows import estimate_flows
from estimators.migration import MigrationConfig
from stream.publish.flows import flows_document


def main() -> None:
    """Simulate, collect the settled periods and print what their documents hide."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.01)
    ap.add_argument("--days", type=float, default=100.0)
    ap.add_argument("--k", type=int, default=15)
    a = ap.parse_args()
    args = argparse.Namespace(scenario="astana", scale=a.scale, days=a.days, boost=10.0,
                              holidays=1.0, shift=0.01, lapse=0.1, new=0.05, seed=1, window=28,
                              min_nights=10, min_net=30.0)
    run = _run(_variant(args, True), args)
    regions, resident = run["regions"], run["estimate"].resident
    hidden_regions = [regions.ids[i] for i in np.flatnonzero(np.isnan(resident))]
    print(f"resident: {len(hidden_regions)} of {resident.size} regions hidden {hidden_regions}")
    values = nulls = cells = hidden_cells = 0
    for p, by_home, rse in (v for _, v in sorted(run["settled"].items())):
        fe = estimate_flows(p, regions, by_home, rse)
        doc = flows_document(fe, regions, 0, a.k, MigrationConfig(), None)
        for figures in doc["regions"].values():
            shown = [v for name, v in figures.items() if name != "name"]
            values += len(shown)
            nulls += sum(v is None for v in shown)
        moved = p.cohort_relocations > 0
        np.fill_diagonal(moved, False)
        cells += int(moved.sum())
        hidden_cells += int((moved & np.isnan(fe.od_devices)).sum())
    print(f"flows: {len(run['settled'])} settled periods; region figures null {nulls}/{values} "
          f"= {nulls / max(values, 1):.1%}; non-zero OD cells hidden {hidden_cells}/{cells} "
          f"= {hidden_cells / max(cells, 1):.1%}")


if __name__ == "__main__":
    main()

"""A snapshot as a fixed-width text table, for the command line and the demo."""

from __future__ import annotations

from typing import Any

from estimators.units import HOUR_MS
from stream.timefmt import parse_iso_ms


def region_table(snapshot: dict[str, Any], truth: dict[str, dict[str, int]] | None = None) -> str:
    """A readable fixed-width table of a snapshot's regions; ``truth`` (region id → true
    ``present``/``resident``, one snapshot time of :func:`~stream.sources.reference_files.load_truth`)
    adds the true figures. A snapshot whose figures are warming up starts with a line saying
    which and for about how long (:func:`warm_up_line`), then a blank line: it explains the
    table's ``—`` gaps before a long table shows them."""
    head = ["region", "present", "90% interval", "resident", "registered", "gap", "gap %"]
    if truth is not None:
        head += ["true present", "true resident"]
    rows = [head]
    for rid, r in snapshot["regions"].items():
        if rid == "unassigned" and r["devices"] is None and r["resident"] is None:
            continue
        interval = "—" if r["lo"] is None else f"{r['lo']:,}–{r['hi']:,}"
        pct = "—" if r["gap_ratio"] is None else f"{100 * r['gap_ratio']:+.1f}%"
        row = [f"{r['name']} ({rid})", fmt(r["present"]), interval, fmt(r["resident"]),
               fmt(r["registered"]), fmt(r["gap"]), pct]
        if truth is not None:
            t = truth.get(rid, {})
            row += [fmt(t.get("present")), fmt(t.get("resident"))]
        rows.append(row)
    note = warm_up_line(snapshot)
    return (f"{note}\n\n" if note else "") + fixed_width(rows)


def warm_up_line(snapshot: dict[str, Any]) -> str | None:
    """What is still warming up in a snapshot, with the hours left (None when nothing is)."""
    warm = snapshot.get("warming_up") or {}
    if not (warm.get("present") or warm.get("resident")):
        return None
    at = parse_iso_ms(snapshot["at"])

    def left(figure: str) -> str:
        ready = warm.get(f"{figure}_ready_at")
        if ready is None:
            return "warming up"
        hours = max(1, -(-(parse_iso_ms(ready) - at) // HOUR_MS))
        return f"warming up, about {hours} h left (ready {ready})"

    parts = [f"present {left('present')}"] if warm.get("present") else []
    parts.append(f"resident and gap {left('resident')}")
    return ("warming up: the engine has not observed long enough, figures are provisional "
            "and no gap is given: " + "; ".join(parts))


def observed_clause(doc: dict[str, Any]) -> str:
    """For a flow or foreign-SIM period document: ``", observed from DATE only"`` when the data
    began inside it, ``", no whole night of it observed"`` when none of its nights was observed
    whole, else ``""``."""
    if doc["complete"]:
        return ""
    if doc["observed_from"]:
        return f", observed from {doc['observed_from']} only"
    return ", no whole night of it observed"


def fmt(v: Any) -> str:
    """A count for a table: ``1,234``, or ``—`` when suppressed (None)."""
    return "—" if v is None else f"{v:,}"


def fixed_width(rows: list[list[str]]) -> str:
    """Rows (the first is the header) as aligned text: first column left, the others right,
    a rule under the header."""
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(str(v).ljust(widths[c]) if c == 0 else str(v).rjust(widths[c])
                               for c, v in enumerate(r)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


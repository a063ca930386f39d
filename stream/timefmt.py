"""Times as people write them: ISO-8601 instants and durations such as ``6h``, one copy each.

Instants inside defacto are UTC milliseconds since 1970 (``*_ms``, see :mod:`estimators.units`);
these functions are the only conversions to and from text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from estimators.units import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS

_DURATION_UNITS_MS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "min": MINUTE_MS, "h": HOUR_MS,
                      "d": DAY_MS}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)?")


def iso_utc(ts_ms: int) -> str:
    """ISO-8601 UTC with a ``Z``: ``2026-03-02T01:00:00Z``, milliseconds only when non-zero
    (``2026-03-02T01:00:00.125Z``)."""
    dt = datetime.fromtimestamp(ts_ms / SECOND_MS, tz=UTC)
    text = dt.isoformat(timespec="milliseconds" if ts_ms % SECOND_MS else "seconds")
    return text.replace("+00:00", "Z")


def parse_iso_ms(text: str) -> int:
    """UTC milliseconds since 1970 from an ISO-8601 time; a time without zone is taken as UTC.

    Raises ``ValueError`` naming the text when it is not an ISO-8601 time.
    """
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * SECOND_MS)


def parse_duration_ms(text: str) -> int:
    """Milliseconds from ``90`` (seconds), ``90s``, ``250ms``, ``30m``, ``6h``, ``1d`` or ``1h30m``.

    Raises ``ValueError`` (with examples) for anything else.
    """
    parts = _DURATION_PART.findall(text.strip())
    joined = "".join(n + (u or "") for n, u in parts)
    if not parts or joined != re.sub(r"\s+", "", text):
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 30m, 6h, 1d)")
    return round(sum(float(n) * _DURATION_UNITS_MS[u or "s"] for n, u in parts))


__all__ = ["iso_utc", "parse_duration_ms", "parse_iso_ms"]

"""Time units: the only time constants in defacto.

One vocabulary everywhere: instants are ``int64`` milliseconds since 1970-01-01 UTC and carry
``_ms`` in their names (``ts_ms``, ``at_ms``); durations carry their unit too (``horizon_ms``,
``utc_offset_s``). Durations given by people (``--horizon 6h``) are converted to ``*_ms`` once, at
the configuration boundary; nothing below it multiplies by 1000 again.
"""

from __future__ import annotations

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

HOUR_S = 3_600
DAY_S = 24 * HOUR_S

EPOCH_MS = 1_577_836_800_000
"""2020-01-01T00:00:00Z: device-state stamps count from here; no ping is older."""


__all__ = ["DAY_MS", "DAY_S", "EPOCH_MS", "HOUR_MS", "HOUR_S", "MINUTE_MS", "SECOND_MS"]

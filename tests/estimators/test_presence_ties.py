"""Pings of one device in the same millisecond that disagree: settled by rank, not by order."""

from __future__ import annotations

from typing import Any

import h3
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estimators.engine import Engine, EngineConfig
from estimators.regions import regions_from_geojson

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
POINTS = [(51.15, 71.45), (51.05, 71.45), (50.7, 71.0), (51.16, 71.47)]
OPERATORS = ["beeline", "kcell", "tele2"]


def _pings(draw: Any) -> list[tuple[int, int, int, str, int]]:
    """(device, ts offset ms, point, operator, home_mcc) rows with many same-ms clashes."""
    row = st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, len(POINTS) - 1),
                    st.sampled_from(OPERATORS), st.sampled_from([401, -1, 250]))
    return draw(st.lists(row, min_size=1, max_size=40))


def _state(regions_doc: dict[str, Any], rows: list[tuple[int, int, int, str, int]],
           order: np.ndarray, batch: int) -> dict[int, tuple[int, int, str, bool]]:
    """Ingest ``rows`` in ``order``, ``batch`` at a time; per device: (ts, H3 cell, operator,
    foreign SIM), in portable terms (location numbers and operator codes differ per engine)."""
    engine = Engine(regions_from_geojson(regions_doc), EngineConfig(res=8))
    for lo in range(0, len(order), batch):
        part = [rows[i] for i in order[lo:lo + batch]]
        key = np.array([1000 + d for d, *_ in part], dtype=np.uint64)
        ts = T0 + np.array([t for _, t, *_ in part], dtype=np.int64)
        lat = np.array([POINTS[p][0] for _, _, p, *_ in part])
        lon = np.array([POINTS[p][1] for _, _, p, *_ in part])
        ops = np.array([engine.operator_code(o) for *_, o, _ in part], dtype=np.int64)
        cls = engine.operator_class(ops, np.array([m for *_, m in part], dtype=np.int64))
        engine.ingest(key, ts, cls, engine.cells.locate_latlng(lat, lon))
    arrays = engine.export_state()
    stamp = arrays["stamp"]
    loc = (stamp & np.uint64((1 << 23) - 1)).astype(np.int64)
    out = {}
    for i, key in enumerate(arrays["key"].tolist()):
        cls = int(arrays["opclass"][i])
        out[key] = (int(stamp[i] >> np.uint64(23)), int(arrays["stamp_cells"][loc[i]]),
                    "" if cls == 255 else str(arrays["operators"][cls]), cls == 255)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_same_millisecond_pings_do_not_depend_on_order_or_batching(
        regions_doc: dict[str, Any], data: Any) -> None:
    rows = _pings(data.draw)
    n = len(rows)
    expected = _state(regions_doc, rows, np.arange(n), n)
    order = np.array(data.draw(st.permutations(range(n))), dtype=np.int64)
    batch = data.draw(st.integers(1, n))
    assert _state(regions_doc, rows, order, batch) == expected
    # the rule: the latest ping; at the same millisecond the larger H3 cell, then the class
    # (operators by name, a foreign SIM last)
    for d in {r[0] for r in rows}:
        mine = [r for r in rows if r[0] == d]
        top = max(t for _, t, *_ in mine)
        best = max((h3.str_to_int(h3.latlng_to_cell(*POINTS[p], 8)), m not in (401, -1),
                    "" if m not in (401, -1) else o) for _, t, p, o, m in mine if t == top)
        got = expected[1000 + d]
        assert (got[1], got[3]) == best[:2]
        if not best[1]:
            assert got[2] == best[2]

"""Migration gauges: per region and window, suppressed figures absent (not 0)."""

from __future__ import annotations

from stream.publish.metrics import WorkerMetrics


def _doc(net: int | None, per_lo: float | None, balance: int | None) -> dict:
    fig = {"net": net, "net_lo": None if net is None else net - 5,
           "net_hi": None if net is None else net + 5, "net_per_1000_lo": per_lo,
           "net_per_1000_hi": None if per_lo is None else per_lo + 2}
    return {"regions": {"astana": fig}, "rural": {"balance": balance}}


def test_flows_gauges_by_window_and_suppression() -> None:
    m = WorkerMetrics()
    m.configure(window_s=3600, gap_threshold=0.1, migration_alert_rate=4.0)
    m.show_flows({"week": _doc(120, 6.5, -40), "week:closed": _doc(90, 5.5, None)})
    text = m.exposition().decode()
    assert 'defacto_net_migration{region="astana",window="week"} 120.0' in text
    assert 'defacto_net_migration_per_1000_lower{region="astana",window="last_week"} 5.5' in text
    assert 'defacto_rural_balance{window="week"} -40.0' in text
    assert 'window="last_week"' in text and 'defacto_rural_balance{window="last_week"}' not in text
    assert "defacto_migration_alert_rate_per_1000 4.0" in text
    m.show_flows({"week": _doc(None, None, None)})  # now suppressed: the series go away
    text = m.exposition().decode()
    assert 'defacto_net_migration{region="astana",window="week"}' not in text
    assert 'defacto_rural_balance{window="week"}' not in text

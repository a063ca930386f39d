"""Usual residence, relocations, returns, confirmation and lapse, night by night (migration)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from estimators.engine import Engine, EngineConfig
from estimators.migration import (
    MigrationConfig,
    PeriodCounts,
    merge_migration,
    period_label,
    period_nights,
    period_of,
)
from estimators.regions import regions_from_geojson
from estimators.tally import Tally, merge_tallies
from estimators.units import DAY_MS, HOUR_MS

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z, a Monday
NIGHT_UTC_MS = 18 * HOUR_MS  # 23:00 in Asia/Almaty (UTC+5)
PLACES = {"north": (51.15, 71.45), "south": (51.05, 71.45), "rural": (50.7, 71.0)}


def _engine(regions_doc: dict[str, Any], config: MigrationConfig | None = None) -> Engine:
    return Engine(regions_from_geojson(regions_doc),
                  EngineConfig(res=8, migration=config or MigrationConfig()))


def _nights(engine: Engine, device: int, places: list[str], first_day: int = 0) -> tuple[np.ndarray, ...]:
    """One ping per night for ``device`` at ``places[i]`` on day ``first_day + i`` (None: silent)."""
    days = [first_day + i for i, p in enumerate(places) if p is not None]
    lat = np.array([PLACES[p][0] for p in places if p is not None])
    lon = np.array([PLACES[p][1] for p in places if p is not None])
    ts = T0 + np.array(days, dtype=np.int64) * DAY_MS + NIGHT_UTC_MS
    key = np.full(len(ts), 1000 + device, dtype=np.uint64)
    return key, ts, np.zeros(len(ts), dtype=np.uint8), engine.cells.locate_latlng(lat, lon)


def _run(engine: Engine, *devices: tuple[np.ndarray, ...], days: int,
         step_days: int = 5) -> dict[tuple[str, int], PeriodCounts]:
    """Feed the devices' pings in time order, tallying every ``step_days``; every period seen,
    in its latest version."""
    cols = [np.concatenate(c) for c in zip(*devices, strict=True)]
    order = np.argsort(cols[1], kind="stable")
    cols = [c[order] for c in cols]
    seen: dict[tuple[str, int], PeriodCounts] = {}
    done = 0
    for day in range(step_days, days + step_days, step_days):
        at = T0 + day * DAY_MS
        stop = int(np.searchsorted(cols[1], at))
        engine.ingest(*(c[done:stop] for c in cols))
        done = stop
        tally = engine.tally(at)
        assert tally.migration is not None
        seen.update({(p.kind, p.number): p for p in tally.migration.periods})
    return seen


def _total(periods: dict[tuple[str, int], PeriodCounts], field: str) -> np.ndarray:
    """A counter summed over the months (they tile time)."""
    return sum(getattr(p, field) for (kind, _), p in periods.items() if kind == "month")


def test_housed_then_relocated_with_dates(regions_doc: dict[str, Any]) -> None:
    engine = _engine(regions_doc)
    rs = engine.regions
    north, south = rs.index["north"], rs.index["south"]
    periods = _run(engine, _nights(engine, 0, ["north"] * 40 + ["south"] * 20), days=60)
    housed, moves = _total(periods, "housed"), _total(periods, "relocations")
    assert housed[north] == 1 and housed.sum() == 1
    assert moves[north, south] == 1 and moves.sum() == 1
    mig = engine.migration
    assert mig is not None
    first_night = (T0 + NIGHT_UTC_MS) // DAY_MS
    # south from night 40 on: it holds more than half of the 28-night window from night 54 on
    assert int(mig.arrays["pend_effective"][0]) == first_night + 40
    assert int(mig.arrays["ur"][0]) == south
    assert int(mig.arrays["ur_since"][0]) == first_night + 54


def test_correcting_a_provisional_residence_is_no_pending_move(regions_doc: dict[str, Any]) -> None:
    """Housed after 10 nights, switched 25 nights later: the first UR was provisional (held
    for less than the 28-night window), so the switch can never be confirmed as a move."""
    engine = _engine(regions_doc)
    periods = _run(engine, _nights(engine, 0, ["north"] * 20 + ["south"] * 20), days=40)
    assert _total(periods, "relocations").sum() == 1
    mig = engine.migration
    assert mig is not None and int(mig.arrays["pend_from"][0]) == -1


def test_a_stay_that_housed_a_new_device_is_never_a_move(regions_doc: dict[str, Any]) -> None:
    """First seen on a 12-night stay (housed there), then split nights long enough for that
    UR to be held 28 nights, then home for good: the UR never qualified again after being set,
    so going home corrects it and is never confirmed as a move."""
    engine = _engine(regions_doc, MigrationConfig(confirm_nights=90))
    rs = engine.regions
    rural, north = rs.index["rural"], rs.index["north"]
    plan = ["rural"] * 12 + ["north", "south"] * 15 + ["north"] * 110
    periods = _run(engine, _nights(engine, 0, plan), days=len(plan))
    assert _total(periods, "housed")[rural] == 1
    assert _total(periods, "relocations")[rural, north] == 1
    assert _total(periods, "confirmed").sum() == 0


def test_a_holiday_is_not_a_move(regions_doc: dict[str, Any]) -> None:
    engine = _engine(regions_doc)
    periods = _run(engine, _nights(engine, 0, ["north"] * 30 + ["rural"] * 13 + ["north"] * 20),
                   days=65)
    assert _total(periods, "relocations").sum() == 0


def test_a_return_before_confirmation(regions_doc: dict[str, Any]) -> None:
    engine = _engine(regions_doc)
    rs = engine.regions
    north, rural = rs.index["north"], rs.index["rural"]
    periods = _run(engine, _nights(engine, 0, ["north"] * 30 + ["rural"] * 40 + ["north"] * 40),
                   days=110)
    moves = _total(periods, "relocations")
    assert moves[north, rural] == 1 and moves[rural, north] == 1
    returns = _total(periods, "returns")
    assert returns[north, rural] == 1 and returns.sum() == 1
    assert _total(periods, "confirmed").sum() == 0


def test_a_move_is_confirmed_after_90_nights(regions_doc: dict[str, Any]) -> None:
    engine = _engine(regions_doc, MigrationConfig(confirm_nights=90))
    rs = engine.regions
    north, south = rs.index["north"], rs.index["south"]
    plan = ["north"] * 30 + ["south"] * 120
    early = _run(engine, _nights(engine, 0, plan[:119]), days=115)
    assert _total(early, "confirmed").sum() == 0  # effective night 30: confirmed at night 120
    engine = _engine(regions_doc, MigrationConfig(confirm_nights=90))
    confirmed = _total(_run(engine, _nights(engine, 0, plan), days=150), "confirmed")
    assert confirmed[north, south] == 1 and confirmed.sum() == 1


def test_a_stay_then_silence_is_not_confirmed(regions_doc: dict[str, Any]) -> None:
    """A SIM that goes silent after a relocation keeps the new UR, but silence is no proof:
    the move is confirmed only once the device is seen living there again."""
    engine = _engine(regions_doc, MigrationConfig(confirm_nights=90))
    rs = engine.regions
    north, rural = rs.index["north"], rs.index["rural"]
    # silent for 50 nights: lapsed, but kept (a device is forgotten after lapse + window, 58)
    plan: list[str | None] = ["north"] * 30 + ["rural"] * 20 + [None] * 50
    periods = _run(engine, _nights(engine, 0, plan + [None] * 50), days=150)
    assert _total(periods, "relocations")[north, rural] == 1
    assert _total(periods, "confirmed").sum() == 0
    engine = _engine(regions_doc, MigrationConfig(confirm_nights=90))
    periods = _run(engine, _nights(engine, 0, plan + ["rural"] * 25), days=125)
    assert _total(periods, "confirmed")[north, rural] == 1
    assert _total(periods, "reactivated")[rural] == 1


def test_silence_lapses_and_a_new_ping_reactivates(regions_doc: dict[str, Any]) -> None:
    engine = _engine(regions_doc)
    north = engine.regions.index["north"]
    periods = _run(engine, _nights(engine, 0, ["north"] * 20 + [None] * 35 + ["north"] * 3),
                   days=60)
    assert _total(periods, "lapsed")[north] == 1
    assert _total(periods, "reactivated")[north] == 1
    assert _total(periods, "relocations").sum() == 0  # a silent SIM is no out-migrant


def _population(n: int, seed: int) -> list[list[str | None]]:
    """Night plans with random stays, holidays, moves and silences over 100 nights."""
    rng = np.random.default_rng(seed)
    names: list[str | None] = [*PLACES, None]
    plans = []
    for _ in range(n):
        plan: list[str | None] = [None] * int(rng.integers(0, 10))
        while len(plan) < 100:
            plan += [names[rng.integers(0, 4)]] * int(rng.integers(3, 40))
        plans.append(plan[:100])
    return plans


def _columns(engine: Engine, plans: list[list[str | None]]) -> list[np.ndarray]:
    cols = [np.concatenate(c) for c in zip(*(_nights(engine, d, p) for d, p in enumerate(plans)),
                                           strict=True)]
    order = np.argsort(cols[1], kind="stable")
    return [c[order] for c in cols]


FIELDS = ("start_stock", "end_stock", "cohort", "housed", "lapsed", "reactivated",
          "relocations", "cohort_relocations", "confirmed", "returns", "relocations_by_effective",
          "settles_on", "revised_night")


def test_stock_flow_identity_and_order_independence(regions_doc: dict[str, Any]) -> None:
    plans = _population(300, seed=4)
    one = _engine(regions_doc)
    periods = _run(one, *(_nights(one, d, p) for d, p in enumerate(plans)), days=105)
    assert _total(periods, "relocations").sum() and _total(periods, "lapsed").sum()
    assert _total(periods, "reactivated").sum() and _total(periods, "returns").sum()
    for p in periods.values():
        assert not p.balance_error().any(), p.label
        assert (p.cohort <= p.start_stock).all()
    at = T0 + 105 * DAY_MS
    whole = one.tally(at)
    # two engines fed disjoint devices, in batches of another size: merged tallies are identical
    parts = []
    for half in (plans[0::2], plans[1::2]):
        eng = _engine(regions_doc)
        cols = _columns(eng, half)
        for lo in range(0, len(cols[0]), 777):
            eng.ingest(*(c[lo:lo + 777] for c in cols))
        parts.append(eng.tally(at))
    merged = merge_tallies(parts)
    assert merged.migration is not None and whole.migration is not None
    assert [(p.kind, p.number) for p in merged.migration.periods] == \
        [(p.kind, p.number) for p in whole.migration.periods]
    for a, b in zip(merged.migration.periods, whole.migration.periods, strict=True):
        for field in FIELDS:
            assert np.array_equal(getattr(a, field), getattr(b, field)), (a.label, field)
    back = Tally.from_bytes(merged.to_bytes())
    assert back.migration is not None
    for a, b in zip(back.migration.periods, merged.migration.periods, strict=True):
        for field in FIELDS:
            assert np.array_equal(getattr(a, field), getattr(b, field)), (a.label, field)


def test_checkpoint_keeps_the_migration_state(regions_doc: dict[str, Any]) -> None:
    plans = _population(100, seed=9)
    whole = _engine(regions_doc)
    whole.ingest(*_columns(whole, plans))
    cut_at = T0 + 50 * DAY_MS
    first = _engine(regions_doc)
    cols = _columns(first, plans)  # location numbers are per engine
    cut = int(np.searchsorted(cols[1], cut_at))
    first.ingest(*(c[:cut] for c in cols))
    first.tally(cut_at)
    resumed = _engine(regions_doc)
    resumed.restore_state(first.export_state())
    cols = _columns(resumed, plans)
    resumed.ingest(*(c[cut:] for c in cols))
    at = T0 + 105 * DAY_MS
    a, b = whole.tally(at).migration, resumed.tally(at).migration
    assert a is not None and b is not None
    for x, y in zip(a.periods, b.periods, strict=True):
        for field in FIELDS:
            assert np.array_equal(getattr(x, field), getattr(y, field)), (x.label, field)


def test_relocations_dated_by_effective_night_settle_a_window_after_the_period(
        regions_doc: dict[str, Any]) -> None:
    """North from day 0, south from day 52 (effective, in April): the switch is detected 14
    nights later, in the next period; by effective night it is April's, which settles 27
    nights after April ends and is then published as ``month:effective``."""
    engine = _engine(regions_doc)
    rs = engine.regions
    north, south = rs.index["north"], rs.index["south"]
    plan = ["north"] * 52 + ["south"] * 90
    cols = _nights(engine, 0, plan)
    fed = 0
    first_night = (T0 + NIGHT_UTC_MS) // DAY_MS
    effective = first_night + 52
    detected = effective + 14
    april = period_of(effective, "month")
    assert period_of(detected, "month") == april + 1 and period_of(detected, "week") > \
        period_of(effective, "week")

    def at_night(night: int) -> dict[str, PeriodCounts]:
        nonlocal fed
        at = engine.night_close_ms(night)
        upto = int(np.searchsorted(cols[1], at))
        engine.ingest(*(c[fed:upto] for c in cols))
        fed = upto
        tally = engine.tally(at)
        assert tally.migration is not None
        return tally.migration.published()

    apr_last = period_nights("month", april)[1]
    pub = at_night(detected)
    assert pub["month"].relocations[north, south] == 1  # detected in May
    assert pub["month:closed"].number == april and pub["month:closed"].relocations.sum() == 0
    assert "month:effective" not in pub or pub["month:effective"].number < april
    april_ledger = next(p for p in engine.tally(engine.night_close_ms(detected)).migration.periods
                        if (p.kind, p.number) == ("month", april))
    assert april_ledger.relocations_by_effective[north, south] == 1 and not april_ledger.settled
    pub = at_night(apr_last + 26)
    assert pub.get("month:effective") is None or pub["month:effective"].number < april
    pub = at_night(apr_last + 27)
    eff = pub["month:effective"]
    assert eff.number == april and eff.final and eff.dating == "effective"
    assert eff.relocations[north, south] == 1 and eff.cohort_relocations[north, south] == 1
    week = pub["week:effective"]
    assert week.dating == "effective" and week.final


def test_periods() -> None:
    night = (T0 - 0) // DAY_MS  # 2026-03-02, a Monday
    week = period_of(night, "week")
    assert period_label("week", week) == "2026-W10"
    assert period_nights("week", week) == (night, night + 6)
    assert period_of(night + 6, "week") == week and period_of(night + 7, "week") == week + 1
    month = period_of(night, "month")
    assert period_label("month", month) == "2026-03"
    first, last = period_nights("month", month)
    assert last - first == 30 and period_of(first - 1, "month") == month - 1


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="move-min-nights"):
        MigrationConfig(min_nights=40)
    with pytest.raises(ValueError, match="window"):
        MigrationConfig(window_nights=0)
    assert merge_migration([]).periods == []

"""Several ping files are one input, merged by event time (field case 02): the merge rule, its
exactness for files sorted within the lateness, and its bounds (rows held, files open)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators.units import DAY_MS, HOUR_MS, MINUTE_MS
from stream.contract import InputError, Record
from stream.estimate.windows import REANCHOR_PINGS, WindowSettings
from stream.sources import merged_files
from stream.sources.merged_files import event_time, merge_by_event_time
from stream.sources.ping_files import read_records

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
L = WindowSettings.lateness_ms


class Files:
    """In-memory ping files: path -> list of ts (None: a row without a valid ts); counts the
    files open at once."""

    def __init__(self, files: dict[str, list[int | None]]) -> None:
        self.files = files
        self.open_now = 0
        self.most_open = 0

    def records(self, path: Path) -> Iterator[Record]:
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            for line, ts in enumerate(self.files[str(path)], start=1):
                fields = {"device": f"{path}-{line}", "ts": "bad" if ts is None else ts}
                yield Record(f"{path}:{line}", fields, f"row {line} of {path}")
        finally:
            self.open_now -= 1

    def merge(self, order: list[str] | None = None) -> list[Record]:
        paths = [Path(p) for p in (order or list(self.files))]
        return [r for block in merge_by_event_time(paths, self.records) for r in block]


def _ts(records: list[Record]) -> list[int | None]:
    return [event_time(r) for r in records]


def _per_file_order_kept(files: dict[str, list[int | None]], merged: list[Record]) -> None:
    for path, rows in files.items():
        lines = [int(r.source.rsplit(":", 1)[1]) for r in merged if r.source.rsplit(":", 1)[0] == path]
        assert lines == list(range(1, len(rows) + 1)), path


def _behind(ts: list[int | None]) -> list[int]:
    """How far each valid ts is behind the latest valid ts before it (0 when not behind)."""
    out, top = [], None
    for t in ts:
        if t is None:
            continue
        out.append(0 if top is None else max(0, top - t))
        top = t if top is None else max(top, t)
    return out


def test_per_operator_files_of_one_day_merge_into_time_order(tmp_path: Path) -> None:
    """Field case 02: 3 operators x 20 devices, device i at 00:10 + 15 min x i."""
    paths = []
    for op in ("40101", "40102", "40177"):
        path = tmp_path / f"pings_{op}.jsonl"
        path.write_text("".join(json.dumps({"device": f"{op}-{i:02d}", "ts": T0 + (10 + 15 * i) * MINUTE_MS,
                                            "operator": op, "lat": 51.25, "lon": 71.25}) + "\n"
                                for i in range(20)))
        paths.append(path)
    for order in (paths, paths[::-1], [paths[1], paths[2], paths[0]]):
        merged = [r for chunk in read_records(order, chunk_rows=7) for r in chunk]
        assert len(merged) == 60
        assert _ts(merged) == sorted(_ts(merged))  # type: ignore[type-var]
        # equal times: the file named first comes first
        assert [r.source for r in merged[:3]] == [f"{p}:1" for p in order]


@st.composite
def nearly_sorted_files(draw: st.DrawFn, lateness: int = L) -> dict[str, list[int | None]]:
    """1..5 files, each sorted within ``lateness`` (no row more than it behind an earlier row of
    its file), over a few hours, with rows without a valid ts here and there."""
    files = {}
    for k in range(draw(st.integers(1, 5))):
        v = T0 + draw(st.integers(0, HOUR_MS))
        rows: list[int | None] = []
        for _ in range(draw(st.integers(0, 40))):
            if draw(st.integers(0, 9)) == 0:
                rows.append(None)
                continue
            v += draw(st.integers(0, 5 * MINUTE_MS))
            rows.append(v - draw(st.integers(0, lateness)))
        files[f"f{k}"] = rows
    return files


@given(nearly_sorted_files(), st.integers(1, 4))
@settings(max_examples=150, deadline=None, database=None)
def test_files_sorted_within_the_lateness_merge_within_it(files: dict[str, list[int | None]],
                                                          block: int) -> None:
    """The merge is exact: no row of the merge is more than the lateness behind a row before it
    (so none is too_late), and its order does not depend on the block size (in rows or
    characters)."""
    merged = Files(files).merge()
    assert sorted(r.source for r in merged) == sorted(
        f"{p}:{i}" for p, rows in files.items() for i in range(1, len(rows) + 1))
    _per_file_order_kept(files, merged)
    assert max(_behind(_ts(merged)), default=0) <= L
    for rows, chars in ((block, 1 << 20), (1000, 10 * block)):  # blocks cut by rows, by size
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(merged_files, "BLOCK_ROWS", rows)
            mp.setattr(merged_files, "MIN_BLOCK_ROWS", rows)
            mp.setattr(merged_files, "BLOCK_CHARS", chars)
            small = Files(files).merge()  # a run of one progress value over 4 blocks goes early
            _per_file_order_kept(files, small)
            assert max(_behind(_ts(small)), default=0) <= L
            mp.setattr(merged_files, "HELD_BLOCKS", 10**6)
            assert [r.source for r in Files(files).merge()] == [r.source for r in merged]


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                       st.lists(st.one_of(st.none(), st.integers(T0, T0 + 5 * HOUR_MS)), max_size=30),
                       min_size=1))
@settings(max_examples=150, deadline=None, database=None)
def test_a_row_is_never_further_behind_in_the_merge_than_in_its_file(
        files: dict[str, list[int | None]]) -> None:
    """Whatever the files hold (here: unsorted, within 5 h): a row is behind the rows merged
    before it by no more than it is behind the earlier rows of its own file, so it is too_late
    in the merge only where it would be in a replay of its file alone."""
    merged = Files(files).merge()
    _per_file_order_kept(files, merged)
    alone = {f"{p}:{i}": b for p, rows in files.items()
             for i, b in zip([i + 1 for i, t in enumerate(rows) if t is not None],
                             _behind(rows), strict=True)}
    valid = [r for r in merged if event_time(r) is not None]
    for r, b in zip(valid, _behind(_ts(valid)), strict=True):
        assert b <= alone[r.source], r.source


def test_a_stray_row_does_not_hold_its_file_back() -> None:
    """One row 3 days ahead in file a (a typo, a bad clock): a's other rows still interleave
    with b's; the stray comes where it stands in its file (the windows reject it)."""
    minutes = [T0 + m * MINUTE_MS for m in range(60)]
    a = minutes[:30] + [T0 + 3 * DAY_MS] + minutes[30:]
    merged = Files({"a": a, "b": minutes}).merge()
    valid = [t for t in _ts(merged) if t != T0 + 3 * DAY_MS]
    assert valid == sorted(valid)  # type: ignore[type-var]
    pos = {r.source: i for i, r in enumerate(merged)}
    assert pos["a:30"] + 1 == pos["a:31"] < pos["b:30"]  # in its place: after a:30 (00:29)


def test_a_gap_in_one_file_is_filled_by_the_others_first() -> None:
    """File a has no data from 01:00 to 11:00; its rows after the gap wait for b to get there
    (the first REANCHOR_PINGS - 1 of them, more than 6 h ahead of a's progress, come at once, as
    they would alone: the windows reject them as ts_ahead_of_stream)."""
    a = [T0 + m * MINUTE_MS for m in range(60)] + [T0 + 11 * HOUR_MS + m * MINUTE_MS for m in range(30)]
    b = [T0 + m * MINUTE_MS for m in range(0, 12 * 60, 10)]
    merged = Files({"a": a, "b": b}).merge()
    pos = {r.source: i for i, r in enumerate(merged)}
    assert all(pos[f"a:{61 + i}"] < pos["b:7"] for i in range(REANCHOR_PINGS - 1))  # b:7 is 01:00
    assert pos["b:67"] < pos[f"a:{60 + REANCHOR_PINGS}"] < pos["b:68"]  # 11:00 < 11:09 < 11:10
    rest = [t for r, t in zip(merged, _ts(merged), strict=True)
            if not (r.source.startswith("a:") and 61 <= int(r.source[2:]) < 60 + REANCHOR_PINGS)]
    assert rest == sorted(rest)  # type: ignore[type-var]


def test_rows_without_a_time_stay_in_their_place() -> None:
    merged = Files({"a": [None, T0 + 5, None, T0 + 20], "b": [T0 + 10, None]}).merge()
    assert [r.source for r in merged] == ["a:1", "a:2", "a:3", "b:1", "b:2", "a:4"]


def test_daily_files_are_opened_one_day_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A week of per-operator daily files (14 files, read 4 rows at a time): at most the 2 of
    one day are open at once (beyond the look at each file's first row, one at a time)."""
    monkeypatch.setattr(merged_files, "BLOCK_ROWS", 4)
    monkeypatch.setattr(merged_files, "MIN_BLOCK_ROWS", 4)
    files = {f"{op}-day{d}": [T0 + d * DAY_MS + m * 30 * MINUTE_MS for m in range(48)]
             for d in range(7) for op in ("x", "y")}
    reader = Files(files)
    order = sorted(files, reverse=True)
    merged = reader.merge(order)
    assert _ts(merged) == sorted(_ts(merged))  # type: ignore[type-var]
    assert reader.most_open == 2


def test_a_long_run_of_one_time_is_let_through_in_bounded_blocks(monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    monkeypatch.setattr(merged_files, "BLOCK_ROWS", 2)
    monkeypatch.setattr(merged_files, "MIN_BLOCK_ROWS", 2)
    files: dict[str, list[int | None]] = {"a": [T0] * 50 + [T0 + 1], "b": [T0] * 30 + [T0 + 2]}
    merged = Files(files).merge()
    _per_file_order_kept(files, merged)
    assert _ts(merged)[-2:] == [T0 + 1, T0 + 2]


def test_a_file_breaking_mid_merge_passes_on_what_was_read_then_raises() -> None:
    class Broken(Files):
        def records(self, path: Path) -> Iterator[Record]:
            for i, r in enumerate(super().records(path)):
                if str(path) == "b" and i == 5:
                    raise InputError("b:6: the compressed data ends early")
                yield r

    files: dict[str, list[int | None]] = {"a": [T0 + i for i in range(0, 40, 2)],
                                          "b": [T0 + i for i in range(1, 40, 2)]}
    got: list[Record] = []
    with pytest.raises(InputError, match="b:6"):
        for block in merge_by_event_time([Path("a"), Path("b")], Broken(files).records):
            got.extend(block)
    assert [r.source for r in got if r.source.startswith("b:")] == [f"b:{i}" for i in range(1, 6)]
    assert len(got) > 5


def test_missing_file_is_refused_before_any_row(tmp_path: Path) -> None:
    good = tmp_path / "a.jsonl"
    good.write_text(json.dumps({"device": "d", "ts": T0, "operator": "40101"}) + "\n")
    it = read_records([good, tmp_path / "nope.jsonl"])
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file"):
        next(it)

"""Per-file outcomes of a replay or calibrate: a file rejected whole, or mostly, is named."""

from __future__ import annotations

import numpy as np
import pytest

from stream.contract import Reject, check_ping, ts_hint
from stream.sources.file_outcomes import FileOutcomes

T0 = 1_772_409_600_000


def _reject(path: str, line: int, reason: str = "ts_out_of_range", detail: str = "d") -> Reject:
    return Reject(f"{path}:{line}", reason, detail, "{}")


def test_counts_per_file_and_warns_from_a_tenth_rejected() -> None:
    out = FileOutcomes(["a.jsonl", "dir:with:colons/b.jsonl", "c.jsonl"])
    kept: list[Reject] = []
    on_reject = out.wrap(kept.append)
    out.count_read(np.array([0] * 100 + [1] * 10 + [2] * 50), 160)
    out.count_read(2, 50)  # a chunk of one file
    for line in range(1, 10):
        on_reject(_reject("a.jsonl", line))  # 9 of 100: under the share
    for line in range(1, 11):
        on_reject(_reject("dir:with:colons/b.jsonl", line, "bad_ts" if line < 4 else
                          "ts_out_of_range", f"detail {line}"))
    for line in range(1, 11):
        on_reject(_reject("c.jsonl", line, "unknown_cell", "cell not in the plan"))
    on_reject(Reject("pings[0]@7", "too_late", "x", "{}"))  # not a file: not counted, still kept
    assert len(kept) == 30
    assert out.read.tolist() == [100, 10, 100]
    assert out.all_rejected() == ["dir:with:colons/b.jsonl"]
    assert out.warnings() == [
        "dir:with:colons/b.jsonl: all its 10 rows rejected (ts_out_of_range 7, bad_ts 3), "
        "missing from every figure; first ts_out_of_range: detail 4",
        "c.jsonl: 10 of its 100 rows (10%) rejected (unknown_cell 10), missing from every "
        "figure; first unknown_cell: cell not in the plan",
    ]
    assert out.main_reason() == "first ts_out_of_range: d"


def test_nothing_read_or_rejected_says_nothing() -> None:
    out = FileOutcomes(["empty.jsonl"])
    out.count_read(np.zeros(0, dtype=np.int64), 0)
    assert out.all_rejected() == [] and out.warnings() == [] and out.main_reason() == ""


@pytest.mark.parametrize(("ts", "hint"), [
    (T0 // 1000, "seconds since 1970? defacto reads milliseconds (multiply by 1000)"),
    (T0 / 1000 + 0.5, "seconds since 1970 with a fraction?"),
    (T0 * 1000, "microseconds since 1970? defacto reads milliseconds (divide by 1000)"),
    (str(T0), "a number written as text (in quotes)?"),
    ("2026-03-02T00:00:00Z", "a date and time as text?"),
    ("2026-03-02 05:00", "a date and time as text?"),
    (12, None),
    ("yesterday", None),
])
def test_a_rejected_time_says_what_it_looks_like(ts: object, hint: str | None) -> None:
    reason, detail = check_ping({"device": "d", "ts": ts, "operator": "40101", "cell": "A"})
    assert reason in ("bad_ts", "ts_out_of_range")
    if hint is None:
        assert ts_hint(ts) == "" and "?" not in detail
    else:
        assert hint in detail and ts_hint(ts) in detail
    assert str(ts) not in detail  # the kind of value only, never the value

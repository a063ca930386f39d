"""A final period document is published once, as of the first snapshot that had it final:
later snapshots keep the stored one (as ``replay --flows-out`` writes it once)."""

from __future__ import annotations

import json
from typing import Any

from stream.publish.redis_publisher import kept_final


def _doc(period: str, final: bool, at: str, people: int, dating: str | None = "detected"
         ) -> dict[str, Any]:
    doc: dict[str, Any] = {"period": period, "final": final, "at": at, "people": people}
    if dating is not None:
        doc["dating"] = dating
    return doc


def _stored(**docs: dict[str, Any]) -> dict[bytes, bytes]:
    return {k.replace("_", ":").encode(): json.dumps(v).encode() for k, v in docs.items()}


def test_a_final_period_stays_as_first_published_and_open_ones_move_on() -> None:
    first = _doc("2026-W09", True, "2026-03-02T01:00:00Z", 100)
    stored = _stored(week_closed=first, week=_doc("2026-W10", False, "2026-03-02T01:00:00Z", 5))
    new = {"week:closed": _doc("2026-W09", True, "2026-03-05T00:00:00Z", 103),
           "week": _doc("2026-W10", False, "2026-03-05T00:00:00Z", 40)}
    out = kept_final(stored, new)
    assert out["week:closed"] == first  # its people and `at` as first published
    assert out["week"] == new["week"]  # open: as of this snapshot


def test_another_period_a_newly_final_one_or_another_dating_is_the_new_document() -> None:
    stored = _stored(week_closed=_doc("2026-W09", True, "a", 1),
                     week_effective=_doc("2026-W08", False, "a", 2, dating="effective"),
                     month_settled=_doc("2026-02", True, "a", 3, dating=None))
    new = {"week:closed": _doc("2026-W10", True, "b", 4),  # the next week closed
           "week:effective": _doc("2026-W08", True, "b", 5, dating="effective"),  # now settled
           "month:settled": _doc("2026-02", True, "b", 6, dating=None),  # foreign: no dating
           "month:closed": _doc("2026-03", True, "b", 7)}  # nothing stored under it
    out = kept_final(stored, new)
    assert out["week:closed"] == new["week:closed"]
    assert out["week:effective"] == new["week:effective"]
    assert out["month:settled"]["people"] == 3
    assert out["month:closed"] == new["month:closed"]
    mismatched = _stored(week_closed=_doc("2026-W09", True, "a", 1, dating="effective"))
    assert kept_final(mismatched, {"week:closed": _doc("2026-W09", True, "b", 9)})[
        "week:closed"]["people"] == 9


def test_a_stored_field_that_is_not_a_json_object_is_replaced() -> None:
    new = {"week:closed": _doc("2026-W09", True, "b", 4)}
    for raw in (b"null", b"{not json", b"[1, 2]"):
        assert kept_final({b"week:closed": raw}, new) == new

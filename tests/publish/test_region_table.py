"""The command line's region table: a warming-up snapshot says so before its table."""

from __future__ import annotations

from typing import Any

from stream.publish.table import region_table


def _snapshot(warming: dict[str, Any] | None) -> dict[str, Any]:
    region = {"name": "North", "present": None, "lo": None, "hi": None, "resident": 1200,
              "registered": 1000, "gap": None, "gap_ratio": None, "devices": 600}
    snap: dict[str, Any] = {"at": "2026-03-02T05:00:00Z", "regions": {"north": region}}
    if warming is not None:
        snap["warming_up"] = warming
    return snap


def test_a_warming_up_snapshot_says_so_before_its_table() -> None:
    text = region_table(_snapshot({"present": True, "resident": True,
                                   "present_ready_at": "2026-03-02T06:00:00Z",
                                   "resident_ready_at": "2026-03-03T06:00:00Z"}))
    first, blank, header = text.splitlines()[:3]
    assert first.startswith("warming up: the engine has not observed long enough")
    assert "present warming up, about 1 h left" in first
    assert "resident and gap warming up, about 25 h left" in first
    assert blank == "" and header.startswith("region")
    assert text.splitlines()[-1].startswith("North (north)")


def test_a_ready_snapshot_is_the_table_alone() -> None:
    text = region_table(_snapshot(None))
    assert text.splitlines()[0].startswith("region") and "warming up" not in text

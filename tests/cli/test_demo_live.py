"""The live demo end to end: embedded broker and Redis, a worker primed with the calibration day,
and a first printed snapshot that is already close to the simulation's truth."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

ROW = re.compile(r"^(?P<name>.+?) \((?P<rid>[a-z0-9-]+)\)\s+(?P<cols>.*)$")


def _first_table(stdout: str) -> tuple[str, dict[str, list[str]]]:
    """The first ``Snapshot at`` block printed: its time and each region's columns."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Snapshot at "))
    at = lines[start].split()[2]
    rows: dict[str, list[str]] = {}
    for line in lines[start + 3:]:
        if not line.strip():
            break
        m = ROW.match(line)
        assert m, line
        rows[m["rid"]] = re.split(r"\s{2,}", m["cols"].strip())
    return at, rows


def _count(text: str) -> int | None:
    return None if text == "—" else int(text.replace(",", ""))


def test_live_demo_first_snapshot_is_primed_and_close_to_truth(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--out", str(tmp_path), "--scale", "0.004",
         "--days", "2", "--speed", "20000"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    primed = re.search(r"priming the worker with the calibration day \(to (\S+)\)", proc.stderr)
    assert primed, proc.stderr[-3000:]
    at, rows = _first_table(proc.stdout)
    # nothing from the priming day is shown: the first figure rests on a whole observed day
    assert at > primed[1], (at, primed[1])
    checked = 0
    for rid, cols in rows.items():
        present, true_present = _count(cols[0]), _count(cols[-2])
        if true_present is None or true_present < 1000:
            continue
        assert present is not None, rid
        assert abs(present - true_present) <= 0.05 * true_present, (rid, present, true_present)
        checked += 1
    assert checked >= 3, rows

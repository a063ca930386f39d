"""The live demo end to end: embedded broker and Redis, a worker primed with the calibration day,
and a first printed snapshot that is already close to the simulation's truth."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time

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


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_sigterm_stops_the_live_demo_and_all_it_started(tmp_path):
    """A service manager's SIGTERM, not a terminal's Ctrl-C: only the demo gets it, and it must
    stop the worker and dashboard (its children) and the broker and Redis (in sessions of
    their own), then exit 130."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "demo", "--out", str(tmp_path), "--scale", "0.002",
         "--days", "2", "--speed", "3600", "--hold"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not any("streaming" in line for line in lines) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        text = "".join(lines)
        assert "streaming" in text, text[-3000:]
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)]
        assert len(set(ports)) >= 4, text  # broker, Redis, worker, dashboard
        opening = time.monotonic() + 60  # the worker's web port may come after the line
        while not all(_port_open(p) for p in set(ports)) and time.monotonic() < opening:
            time.sleep(0.1)
        assert all(_port_open(p) for p in set(ports)), text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130, "".join(lines)[-3000:]
        reader.join(10)
        assert "interrupted; stopping" in "".join(lines)
        closing = time.monotonic() + 30
        while any(_port_open(p) for p in set(ports)) and time.monotonic() < closing:
            time.sleep(0.1)
        assert not [p for p in set(ports) if _port_open(p)], "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

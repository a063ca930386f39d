"""Reading and preparing ping files in a second process (``--reader process``) gives exactly what
the threads of one process give: snapshots, rejects (with their lines and records), skipped
lines, calibrations, errors; and the child never outlives a run, however it ends."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from estimators.engine import MAX_OPERATORS
from estimators.units import HOUR_MS, MINUTE_MS
from stream.cli import main, offline, reads_in_a_process
from stream.contract import InputError
from stream.decode import child_start, prepare_process
from stream.decode.prepare_process import PreparingProcess
from stream.simulator import load_scenario, simulate, write_simulation
from stream.sources.reference_files import ReferencePaths

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z

BAD_ROWS = [  # one of each kind the per-line path words, and checks only the decoder makes
    '{"device":"\\ud800","ts":%d,"operator":"40101","home_mcc":401,"lat":51.1,"lon":71.4}',
    '{"device":"b1","ts":%d,"operator":"40101","home_mcc":401,"cell":"no-such-cell"}',
    '{"device":"b2","ts":%d,"operator":"40101","home_mcc":401,"lat":"51.1","lon":71.4}',
    '{"device":"b3","ts":%d,"operator":"4x101","home_mcc":401,"lat":51.1,"lon":71.4}',
    '{"device":"b4","ts":%d,"operator":"40101","home_mcc":401,"lat":95.0,"lon":71.4}',
    '{"device":"b5","ts":%d,"operator":"40101","device":"again","lat":51.1,"lon":71.4}',
    '{"device":"b6","ts":%d,"operator":"40101","home_mcc":401,"lat":51.1,"lon":71.4',
    '[1, 2, 3]',
    '{"device":"b7","ts":4102444800000,"operator":"40101","home_mcc":401,"lat":51.1,"lon":71.4}',
]


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated days of astana (cell-plan and lat/lon pings, three operators) with a bad
    row of each kind every 7,919 lines, a CRLF line and a blank line."""
    out = tmp_path_factory.mktemp("messy")
    sim = simulate(load_scenario("astana"), scale=0.001, days=2.0, seed=5)
    write_simulation(sim, out)
    lines = (out / "pings.jsonl").read_text().splitlines()
    mixed: list[str] = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if i % 7919 == 7918:
            ts = json.loads(line)["ts"]
            bad = BAD_ROWS[(i // 7919) % len(BAD_ROWS)]
            mixed.append(bad % ts if "%d" in bad else bad)
        if i == 5000:
            mixed.append(line + "\r")
            mixed.append("")
    (out / "pings.jsonl").write_text("\n".join(mixed) + "\n")
    return out


def _reference(d: Path) -> ReferencePaths:
    return ReferencePaths(d / "regions.geojson", d / "registry.csv", None, d / "cells.csv")


def _replay(d: Path, reader: str, tmp: Path, **kw: object) -> tuple[offline.ReplayResult, str, str]:
    out, rejects = tmp / f"snap_{reader}.jsonl", tmp / f"rej_{reader}.jsonl"
    config = offline.ReplayConfig(pings=(d / "pings.jsonl",), reference=_reference(d), out=out,
                                  rejects=rejects, reader=reader, **kw)  # type: ignore[arg-type]
    result = offline.run_replay(config)
    return result, out.read_text(), rejects.read_text()


def test_replay_in_a_process_gives_what_threads_give(messy: Path, tmp_path: Path) -> None:
    got = {r: _replay(messy, r, tmp_path) for r in ("thread", "process")}
    (a, snaps_a, rej_a), (b, snaps_b, rej_b) = got["thread"], got["process"]
    assert a.rejected > 20 and "rejected" in a.summary
    assert snaps_a == snaps_b and snaps_a.count("\n") == a.snapshots > 40
    assert rej_a == rej_b  # same rows, lines, reasons and kept records, in the same order
    assert (a.summary, a.rejected, a.period) == (b.summary, b.rejected, b.period)


def test_a_period_skips_and_reports_the_same_lines(messy: Path, tmp_path: Path) -> None:
    first = json.loads((messy / "pings.jsonl").open().readline())["ts"] // HOUR_MS * HOUR_MS
    kw = {"start_ms": first + 20 * HOUR_MS, "end_ms": first + 30 * HOUR_MS}
    (a, snaps_a, rej_a), (b, snaps_b, rej_b) = (_replay(messy, r, tmp_path, **kw)
                                                for r in ("thread", "process"))
    assert len(a.skipped) == 2 and a.skipped == b.skipped
    assert (snaps_a, rej_a, a.summary) == (snaps_b, rej_b, b.summary)


def test_calibrate_with_footprints_in_a_process_gives_the_same_factors(messy: Path,
                                                                      tmp_path: Path) -> None:
    """Border cells spread by the reference population: the child makes the draw hashes
    before the footprints are in force in the parent."""
    def calibrate(reader: str) -> str:
        out = tmp_path / f"cal_{reader}.csv"
        config = offline.CalibrateConfig(pings=(messy / "pings.jsonl",),
                                         reference_population=messy / "reference.csv", out=out,
                                         reference=_reference(messy),
                                         rejects=tmp_path / f"calrej_{reader}.jsonl",
                                         reader=reader)  # type: ignore[arg-type]
        offline.run_calibrate(config)
        return out.read_text()

    thread = calibrate("thread")
    assert "reference" in thread  # the footprint rule in force: border cells were spread
    assert calibrate("process") == thread
    assert ((tmp_path / "calrej_thread.jsonl").read_text()
            == (tmp_path / "calrej_process.jsonl").read_text())


def test_too_many_operators_are_worded_alike(regions_file: Path, tmp_path: Path) -> None:
    """Rows the parent rejects (no room for their operator) still get their record."""
    pings = tmp_path / "ops.jsonl"
    n = MAX_OPERATORS + 6
    pings.write_text("".join(json.dumps({"device": f"d{i}", "ts": T0 + i * MINUTE_MS,
                                         "operator": f"{10000 + i}", "lat": 51.15, "lon": 71.45})
                             + "\n" for i in range(n)))
    got = {}
    for reader in ("thread", "process"):
        rejects = tmp_path / f"rej_{reader}.jsonl"
        config = offline.ReplayConfig(pings=(pings,), reference=ReferencePaths(regions_file),
                                      out=tmp_path / f"s_{reader}.jsonl", rejects=rejects,
                                      reader=reader)  # type: ignore[arg-type]
        result = offline.run_replay(config)
        got[reader] = (result.summary, rejects.read_text())
    assert "too_many_operators" in got["thread"][0]
    assert got["thread"] == got["process"]


def test_a_read_error_comes_after_the_rows_before_it(regions_file: Path, tmp_path: Path) -> None:
    lines = "".join(json.dumps({"device": f"d{m % 7}", "ts": T0 + m * MINUTE_MS,
                                "operator": "40101", "lat": 51.15, "lon": 71.45}) + "\n"
                    for m in range(20_000))
    data = gzip.compress(lines.encode())
    pings = tmp_path / "p.jsonl.gz"
    pings.write_bytes(data[: len(data) // 2])
    errors = {}
    for reader in ("thread", "process"):
        out = tmp_path / f"s_{reader}.jsonl"
        config = offline.ReplayConfig(pings=(pings,), reference=ReferencePaths(regions_file),
                                      out=out, reader=reader)  # type: ignore[arg-type]
        with pytest.raises(InputError) as exc:
            offline.run_replay(config)
        errors[reader] = (str(exc.value), out.read_text())
    assert "truncated" in errors["thread"][0] and errors["thread"][1].count("\n") >= 1
    assert errors["process"] == errors["thread"]


def test_a_child_that_dies_ends_the_run_loudly(messy: Path) -> None:
    reading = PreparingProcess([messy / "pings.jsonl"])
    try:
        reading._proc.kill()
        reading._proc.wait(10)
        config = offline.ReplayConfig(pings=(messy / "pings.jsonl",), reference=_reference(messy))
        engine = offline.build_engine(config.engine, offline.load_reference(config.reference))
        chunks = reading.prepared(offline.PingDecoder(engine, b"k" * 16))
        with pytest.raises(RuntimeError, match="preparing process ended without a word"):
            next(chunks)
    finally:
        reading.close()


def test_stopping_early_stops_the_child(messy: Path) -> None:
    config = offline.ReplayConfig(pings=(messy / "pings.jsonl",), reference=_reference(messy))
    engine = offline.build_engine(config.engine, offline.load_reference(config.reference))
    reading = PreparingProcess([messy / "pings.jsonl"], chunk_rows=5_000, hold=2)
    chunks = reading.prepared(offline.PingDecoder(engine, b"k" * 16))
    chunk, prepared = next(chunks)
    assert len(chunk) == 5_000 and prepared.groups
    reading.close()
    assert reading._proc.poll() is not None  # gone, not left behind
    reading.close()  # again: nothing


def test_a_script_without_a_main_guard_can_read_in_a_process(messy: Path, tmp_path: Path) -> None:
    """The child is a fresh interpreter, not multiprocessing's spawn: a caller's module-level
    code is not run again in it."""
    script = tmp_path / "script.py"
    script.write_text(
        "from pathlib import Path\n"
        "from stream.cli import offline\n"
        "from stream.sources.reference_files import ReferencePaths\n"
        f"d = Path({str(messy)!r})\n"
        "config = offline.ReplayConfig(pings=(d / 'pings.jsonl',), reader='process',\n"
        "    reference=ReferencePaths(d / 'regions.geojson', None, None, d / 'cells.csv'),\n"
        f"    rejects=Path({str(tmp_path / 'r.jsonl')!r}))\n"
        "print('RAN', offline.run_replay(config).snapshots)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("RAN") == 1


def test_auto_reads_small_inputs_in_threads(messy: Path, tmp_path: Path) -> None:
    small = offline._in_process("auto", [messy / "pings.jsonl"])
    assert small is False  # a few MB: not worth a second interpreter
    big = replace(offline.ReplayConfig(pings=(messy / "pings.jsonl",), reference=_reference(messy)),
                  reader="process")
    assert offline._in_process(big.reader, big.pings) is True
    with pytest.raises(InputError, match="reader must be one of"):
        offline.ReplayConfig(pings=(), reference=_reference(messy), reader="fork")  # type: ignore[arg-type]


def test_a_pipe_is_read_in_threads_or_refused_by_name(messy: Path, tmp_path: Path) -> None:
    """The reading process opens the files itself; a pipe (``<(zcat ...)``) is not its to open."""
    fifo = tmp_path / "pings.fifo"
    os.mkfifo(fifo)
    assert offline._in_process("auto", [fifo]) is False
    with pytest.raises(InputError, match="regular files only"):
        offline._in_process("process", [fifo])
    assert offline._in_process("process", [messy / "pings.jsonl"]) is True


# -- the process the command starts first (stream.decode.child_start) ----------------------------

two_cores = pytest.mark.skipif(child_start.usable_cores() < 2,
                               reason="no spare on a single core: its imports would slow the run")


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[child_start.Child]]:
    """Every preparing process started meanwhile (real ones), by the command or by a run."""
    child_start.drop_spare()  # none left over from elsewhere
    started: list[child_start.Child] = []
    real = child_start.start_child

    def recorded() -> child_start.Child:
        started.append(real())
        return started[-1]

    monkeypatch.setattr(child_start, "start_child", recorded)
    monkeypatch.setattr(prepare_process, "start_child", recorded)
    yield started
    child_start.drop_spare()


def _command(messy: Path, out: Path, *extra: str) -> list[str]:
    return ["defacto", "replay", str(messy / "pings.jsonl"), "--regions",
            str(messy / "regions.geojson"), "--cells", str(messy / "cells.csv"), "--out", str(out),
            "--rejects", str(out.with_suffix(".rej")), *extra]


@two_cores
def test_the_command_starts_its_reading_process_first_and_the_run_takes_it(
        messy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        children: list[child_start.Child]) -> None:
    monkeypatch.setattr(sys, "argv", _command(messy, tmp_path / "p.jsonl", "--reader", "process"))
    assert main() == 0
    assert len(children) == 1  # the one the command started: the run started none of its own
    assert children[0].proc.poll() is not None  # and it did not outlive the command
    for extra in (("--reader", "thread"), ()):  # a few MB with auto: threads, and no spare
        monkeypatch.setattr(sys, "argv", _command(messy, tmp_path / "t.jsonl", *extra))
        assert main() == 0
        assert len(children) == 1
        assert (tmp_path / "p.jsonl").read_text() == (tmp_path / "t.jsonl").read_text()


@two_cores
def test_a_run_that_reads_in_threads_drops_the_spare(
        messy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        children: list[child_start.Child]) -> None:
    dropped: list[int] = []
    real_drop = offline.drop_spare

    def drop() -> None:  # the spare is ended when the run decides, not only at the command's end
        dropped.extend(c.proc.pid for c in children if c.proc.poll() is None)
        real_drop()
        assert all(c.proc.poll() is not None for c in children)

    monkeypatch.setattr(offline, "drop_spare", drop)
    assert child_start.start_spare()
    assert main(_command(messy, tmp_path / "a.jsonl", "--reader", "thread")[1:]) == 0
    assert len(children) == 1 and dropped == [children[0].proc.pid]
    assert child_start.start_spare()
    monkeypatch.setattr(sys, "argv", _command(messy, tmp_path / "b.jsonl", "--horizon", "soon"))
    with pytest.raises(SystemExit):  # a bad option: the parser's exit ends the spare too
        main()
    assert len(children) == 2 and children[1].proc.poll() is not None


@two_cores
def test_a_spare_that_died_is_not_taken(children: list[child_start.Child]) -> None:
    assert child_start.start_spare()
    children[0].proc.kill()
    children[0].proc.wait(10)
    assert child_start.take_spare() is None
    assert child_start.take_spare() is None  # and it is gone


def test_which_commands_start_a_reading_process_first(tmp_path: Path) -> None:
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_text("{}\n")
    with open(big, "wb") as fh:  # sparse: its size, not its blocks
        fh.truncate(child_start.PROCESS_MIN_BYTES)
    cases = [
        (["replay", str(big)], True),
        (["calibrate", str(small), "--reader", "process"], True),
        (["replay", str(small)], False),  # auto, a few bytes: threads
        (["replay", str(small), str(small), "--regions", str(big)], True),  # every file counts
        (["replay", str(big), "--reader", "thread"], False),
        (["calibrate", str(big), "--reader=thread"], False),
        (["replay", str(big), "--help"], False),
        (["simulate", "astana"], False),
        ([], False),
    ]
    for argv, first in cases:
        assert reads_in_a_process(argv) is first, argv

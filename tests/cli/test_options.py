"""Options and reference files out of range: one line ``defacto: error: ...``, exit code 2, for
every command, whether the parser, a config or a loader finds it; the limits stated once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from estimators.units import DAY_MS, HOUR_MS, SECOND_MS
from stream.cli import main
from stream.cli.live import worker_app_from_env
from stream.contract import InputError
from stream.estimate.engine_options import (
    ENGINE_LIMITS,
    WINDOW_LIMITS,
    EngineOptions,
    Limit,
    check_timezone,
    duration_text,
)
from stream.estimate.windows import WindowSettings
from stream.sources.reference_files import ReferencePaths
from stream.worker.config import WorkerConfig

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
KEY = "0123456789abcdef0123456789abcdef"


# --- the limits themselves --------------------------------------------------------------------


def test_a_limit_states_its_range_and_refuses_what_breaks_arithmetic() -> None:
    res = ENGINE_LIMITS["res"]
    assert res.allowed() == "an integer 0..15"
    assert res.check(0) == 0 and res.check(15) == 15
    assert res.problem(16) == "must be an integer 0..15 (H3 resolution of cells), got 16"
    for bad in (-1, 16, 8.0, True, "8", 10**400):
        assert res.problem(bad) is not None, bad
    rse = ENGINE_LIMITS["model_rse"]
    assert rse.allowed() == "a number in [0, 1)"
    assert rse.check(0.0) == 0.0 and rse.check(0.999) == 0.999
    for bad in (float("nan"), float("inf"), -0.01, 1.0, 1e200):
        assert rse.problem(bad) is not None, bad
    gap = Limit("--gap", "fraction", 0, 10, open_lo=True, open_hi=True)
    assert gap.allowed() == "a number in (0, 10)" and gap.problem(0) and gap.problem(10)
    assert WINDOW_LIMITS["lateness_ms"].allowed() == "a duration 0..7d"
    assert Limit("--k", "threshold", 1, integer=True).allowed() == "an integer >= 1"
    assert duration_text(6 * HOUR_MS) == "6h" and duration_text(90 * SECOND_MS) == "90s"


def test_a_limit_parses_command_line_text() -> None:
    import argparse

    res, horizon = ENGINE_LIMITS["res"], ENGINE_LIMITS["horizon_ms"]
    assert res.arg("7") == 7 and res.arg(" 15 ") == 15 and horizon.arg("6h") == 6 * HOUR_MS
    for text in ("16", "-1", "x", "7.0", "²", "٣", "1_0", "9" * 5000, ""):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer 0\.\.15"):
            res.arg(text)
    with pytest.raises(argparse.ArgumentTypeError, match="got 40d"):
        horizon.arg("40d")
    rse = ENGINE_LIMITS["model_rse"]
    assert rse.arg("0.05") == 0.05 and rse.arg(".5") == 0.5 and rse.arg("5e-2") == 0.05
    for text in ("nan", "inf", "1", "-0.1", "٠.٥", "0_5", "0x1", "1e200"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be a number in \[0, 1\)"):
            rse.arg(text)
    with pytest.raises(argparse.ArgumentTypeError) as info:
        res.arg("9" * 5000)
    assert len(str(info.value)) < 150  # the value is echoed cut short


def test_a_duration_without_a_unit_is_seconds_and_says_so(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    horizon = ENGINE_LIMITS["horizon_ms"]
    assert horizon.arg("6h") == 6 * HOUR_MS and capsys.readouterr().err == ""
    assert horizon.arg("6") == 6_000  # seconds, as documented: most likely meant 6h, so said
    assert capsys.readouterr().err == ("defacto: warning: --horizon 6 is read as 6 seconds; "
                                       "write 6m, 6h or 6d for minutes, hours or days\n")


def test_time_zones() -> None:
    assert check_timezone("Asia/Almaty") == "Asia/Almaty" and check_timezone("UTC") == "UTC"
    assert check_timezone("Etc/GMT-5") == "Etc/GMT-5"
    cases = {
        "Asia/Astana": "unknown time zone 'Asia/Astana': use an IANA name such as Asia/Almaty",
        "UTC+5": "'UTC+5' is not an IANA time zone name: use the zone of a place, such as "
                 "Asia/Almaty, or for a fixed UTC+5 offset Etc/GMT-5",
        "GMT-3": "for a fixed UTC-3 offset Etc/GMT+3",
        "+06:00": "for a fixed UTC+6 offset Etc/GMT-6",
        "UTC+5:30": "such as Asia/Kolkata for UTC+5:30",
        "asia/almaty": "unknown time zone 'asia/almaty': did you mean Asia/Almaty?",
        "": "unknown time zone ''",
        "Asia": "unknown time zone 'Asia'",
        "../../etc/passwd": "unknown time zone",
        "Asia/Almaty\x00": "unknown time zone",
        "x" * 500: "unknown time zone 'xxxx",
    }
    for name, hint in cases.items():
        with pytest.raises(InputError) as info:
            check_timezone(name)
        assert str(info.value).startswith("--timezone: ") and hint in str(info.value), name
        assert len(str(info.value)) < 250
    with pytest.raises(InputError, match="Etc/GMT-5"):
        EngineOptions(timezone="UTC+5")


@pytest.mark.parametrize(("fields", "message"), [
    ({"res": 16}, "--res must be an integer 0..15 (H3 resolution of cells), got 16"),
    ({"res": -1}, "--res must be an integer 0..15 (H3 resolution of cells), got -1"),
    ({"model_rse": float("nan")}, "--model-rse must be a number in [0, 1) (model-error relative "
                                  "standard error), got nan"),
    ({"model_rse": 1e200}, "--model-rse must be a number in [0, 1)"),
    ({"k": 0}, "--k must be an integer 1..1000000 (disclosure threshold in devices), got 0"),
    ({"nights": 61}, "--nights must be an integer 1..60"),
    ({"home_mcc": 1000}, "--home-mcc must be an integer 0..999"),
    ({"horizon_ms": 2 * DAY_MS}, "--horizon (2d) must not exceed --activity (1d)"),
    ({"activity_ms": 400 * DAY_MS}, "--activity must be a duration 1s..366d (activity window), "
                                    "got 400d"),
    ({"min_nights": 8}, "--min-nights must be at most --nights (7), got 8"),
    ({"move_min_nights": 29}, "--move-min-nights must be at most --move-window (28), got 29"),
    ({"confirm_nights": 0}, "--confirm-nights must be an integer 1..730"),
    ({"night_length_h": 24.0}, "--night must be a number in (0, 24)"),
])
def test_engine_options_refuse_out_of_range_values(fields: dict, message: str) -> None:
    with pytest.raises(InputError) as info:
        EngineOptions(**fields)
    assert str(info.value).startswith(message)


def test_worker_config_refuses_out_of_range_values(tmp_path: Path) -> None:
    ref = ReferencePaths(regions=tmp_path / "regions.geojson")
    assert WorkerConfig(ref).web_port == 6066
    for fields, message in [
        ({"web_port": 70_000}, "--web-port must be an integer 0..65535"),
        ({"partitions": 0}, "--partitions must be an integer 1..10000"),
        ({"gap_threshold": float("nan")}, "--gap-threshold must be a number in (0, 10)"),
        ({"checkpoint_every_s": float("inf")}, "--checkpoint-every must be a duration 1s..1d"),
        ({"checkpoint_every_s": 0.0}, "--checkpoint-every must be a duration 1s..1d"),
        ({"migration_alert_rate": -5.0}, "--migration-alert-rate must be a number in (0, 1000]"),
        ({"windows": WindowSettings(every_ms=40 * DAY_MS)}, "--every must be a duration 100ms..31d"),
        ({"loglevel": "loud"}, "--loglevel must be one of debug, info, warning, error, critical"),
    ]:
        with pytest.raises(InputError) as info:
            WorkerConfig(ref, **fields)
        assert str(info.value).startswith(message), fields


# --- every command, end to end ----------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path: Path, regions_file: Path) -> dict[str, Path]:
    """Good and broken reference files and a ping file (20 devices in north, 20 in south)."""
    files = {
        "regions": regions_file,
        "cells": "operator,cell,lat,lon\n40101,1203-77,51.15,71.45\n40101,1203-78,51.05,71.45\n",
        "cells_versioned": "operator,cell,lat,lon,valid_from,valid_to\n"
                           "40101,1203-77,51.05,71.45,2024-01-01,2026-03-01\n"
                           "40101,1203-77,51.15,71.45,2026-03-01,\n"
                           "40101,1203-78,51.05,71.45,2024-01-01,\n",
        "cells_far": "operator,cell,lat,lon\n40101,1203-77,51.15,710.45\n",
        "calibration_dup": "region,operator,factor\ncity,*,2.0\ncity,*,2.5\n",
        "calibration_1e155": "region,operator,factor\ncity,*,1e155\n",
        "calibration_max": "region,operator,factor,rse\n*,*,10000,9.99\n",
        "registry_negative": "region,registered\ncity,1000\nnorth,-5\n",
        "registry_semicolons": "region;registered\ncity;1000\n",
        "pings_semicolons": "device;ts;operator;cell\na;1772409600000;40101;1203-77\n",
        "reference_zero": "region,registered\nnorth,0\n",
        "key": KEY,
        "short_key": "too short",
    }
    out: dict[str, Path] = {}
    for name, content in files.items():
        if isinstance(content, Path):
            out[name] = content
            continue
        out[name] = tmp_path / (f"{name}.csv" if "key" not in name else f"{name}.txt")
        out[name].write_text(content)
    pings = [{"device": f"{cell}-{i}", "ts": T0 + i * SECOND_MS, "operator": "40101",
              "home_mcc": 401, "cell": cell} for cell in ("1203-77", "1203-78") for i in range(20)]
    out["pings"] = tmp_path / "pings.jsonl"
    out["pings"].write_text("".join(json.dumps(p) + "\n" for p in pings))
    out["tmp"] = tmp_path
    out["unwritable"] = out["key"] / "snaps.jsonl"  # under a file, not a folder
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Exit code and the stderr lines that are neither warnings nor progress summaries."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # the parser exits by itself
        rc = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()
             and not line.startswith(("defacto: warning", "pings:"))]
    return rc, lines


Argv = Callable[[dict[str, Path]], list[str]]


def _replay(*extra: str, cells: str = "cells") -> Argv:
    return lambda f: ["replay", str(f["pings"]), "--regions", str(f["regions"]), "--cells",
                      str(f[cells]), "--key-file", str(f["key"]), "--k", "1",
                      "--out", str(f["tmp"] / "snaps.jsonl"),
                      *[str(f[x[1:]]) if x.startswith("@") else x for x in extra]]


def _calibrate(*extra: str, cells: str = "cells") -> Argv:
    return lambda f: ["calibrate", str(f["pings"]), "--regions", str(f["regions"]), "--cells",
                      str(f[cells]), "--key-file", str(f["key"]), "--out", str(f["tmp"] / "c.csv"),
                      *[str(f[x[1:]]) if x.startswith("@") else x for x in extra]]


def _worker(*extra: str) -> Argv:
    return lambda f: ["worker", "--regions", str(f["regions"]), "--cells", str(f["cells"]),
                      "--key-file", str(f["key"]), "--partitions", "1",
                      "--datadir", str(f["tmp"] / "worker"),
                      *[str(f[x[1:]]) if x.startswith("@") else x for x in extra]]


def _plain(*argv: str) -> Argv:
    return lambda f: [str(f[x[1:]]) if x.startswith("@") else x for x in argv]


CASES: list[tuple[str, Argv, str]] = [
    # replay: reference files
    ("replay versioned plan", _replay(cells="cells_versioned"),
     "cells_versioned.csv:3: duplicate cell '1203-77' for operator '40101' (first on line 2)"),
    ("replay plan lon", _replay(cells="cells_far"),
     "cells_far.csv:2: lon must be -180..180 (degrees), got 710.45"),
    ("replay calibration dup", _replay("--calibration", "@calibration_dup"),
     "calibration_dup.csv:3: duplicate row for region 'city', operator '*' (first on line 2)"),
    ("replay factor 1e155", _replay("--calibration", "@calibration_1e155"),
     "calibration_1e155.csv:2: factor must be > 0, in the plausible range 0.01..10000"),
    ("replay registry", _replay("--registry", "@registry_negative"),
     "registry_negative.csv:3: registered must be 0..10000000000 (people), got -5"),
    ("replay short key", _replay("--key-file", "@short_key"), "shorter than 16 bytes"),
    ("replay a folder", lambda f: _replay()(f)[:1] + [str(f["tmp"])] + _replay()(f)[2:],
     "a folder; give the ping files in it"),
    ("replay registry semicolons", _replay("--registry", "@registry_semicolons"),
     "(header is 'region;registered'); its columns are separated by semicolons: defacto reads "
     "comma-separated files"),
    ("replay pings semicolons", lambda f: _replay()(f)[:1] + [str(f["pings_semicolons"])]
     + _replay()(f)[2:], "at least device, ts, operator); its columns are separated by "
                         "semicolons"),
    ("replay unwritable out", _replay("--out", "@unwritable"),
     "key.txt/snaps.jsonl: cannot write (a file stands where its folder would be)"),
    # replay: options
    ("replay res 16", _replay("--res", "16"), "argument --res: must be an integer 0..15"),
    ("replay res -1", _replay("--res", "-1"), "argument --res: must be an integer 0..15"),
    ("replay Asia/Astana", _replay("--timezone", "Asia/Astana"),
     "argument --timezone: unknown time zone 'Asia/Astana'"),
    ("replay UTC+5", _replay("--timezone", "UTC+5"), "Etc/GMT-5"),
    ("replay model-rse nan", _replay("--model-rse", "nan"), "argument --model-rse: must be a "
                                                            "number in [0, 1)"),
    ("replay model-rse 1e200", _replay("--model-rse", "1e200"), "argument --model-rse"),
    ("replay k 0", _replay("--k", "0"), "argument --k: must be an integer 1..1000000"),
    ("replay horizon", _replay("--horizon", "2d"), "--horizon (2d) must not exceed --activity (1d)"),
    ("replay every", _replay("--every", "0s"), "argument --every: must be a duration 100ms..31d"),
    ("replay stale bare number", _replay("--stale", "10"),
     "got 10; a number without a unit is seconds (write 10m, 6h, 2d)"),
    ("replay from", _replay("--from", "yesterday"), "--from: not an ISO-8601 time: 'yesterday'"),
    ("replay to", _replay("--to", "2026-13-01"), "--to: not an ISO-8601 time: '2026-13-01'"),
    # calibrate
    ("calibrate reference 0", _calibrate("--reference", "@reference_zero"),
     "reference_zero.csv:2: registered must be 1..10000000000 (people), got 0"),
    ("calibrate reference-rse", _calibrate("--reference", "@reference_zero", "--reference-rse",
                                           "nan"), "argument --reference-rse"),
    ("calibrate plan", _calibrate("--reference", "@reference_zero", cells="cells_versioned"),
     "cells_versioned.csv:3: duplicate cell"),
    ("calibrate res", _calibrate("--reference", "@reference_zero", "--res", "99"), "--res"),
    # simulate
    ("simulate scale", _plain("simulate", "astana", "--scale", "0", "--out", "@tmp"),
     "argument --scale: must be a number in (0, 10]"),
    ("simulate days", _plain("simulate", "astana", "--days", "inf", "--out", "@tmp"),
     "argument --days: must be a number in (0, 366]"),
    ("simulate seed", _plain("simulate", "astana", "--seed", "-1", "--out", "@tmp"),
     "argument --seed"),
    ("simulate speed", _plain("simulate", "astana", "--kafka", "127.0.0.1:1", "--speed", "nan"),
     "argument --speed"),
    ("simulate scenario", _plain("simulate", "@short_key", "--out", "@tmp"), "short_key"),
    # produce (refused before any Kafka connection)
    ("produce frame rows", _plain("produce", "@pings", "--kafka", "127.0.0.1:1", "--frame-rows",
                                  "0"), "argument --frame-rows: must be an integer 1..1000000"),
    ("produce timeout", _plain("produce", "@pings", "--kafka", "127.0.0.1:1", "--timeout", "-1"),
     "argument --timeout"),
    # worker (reference files are read before Kafka is asked anything)
    ("worker calibration", _worker("--calibration", "@calibration_dup"),
     "calibration_dup.csv:3: duplicate row"),
    ("worker plan", _worker("--cells", "@cells_versioned"), "cells_versioned.csv:3: duplicate cell"),
    ("worker res", _worker("--res", "16"), "argument --res"),
    ("worker from", _worker("--from", "2026-03-02T00:00:00Z"),
     "unrecognized arguments: --from"),  # a worker has no period: not taken, not ignored
    ("worker timezone", _worker("--timezone", "UTC+5"), "Etc/GMT-5"),
    ("worker port", _worker("--web-port", "70000"), "argument --web-port: must be an integer "
                                                   "0..65535"),
    ("worker gap", _worker("--gap-threshold", "nan"), "argument --gap-threshold"),
    ("worker checkpoint", _worker("--checkpoint-every", "0s"), "argument --checkpoint-every"),
    ("worker key", _worker("--key-file", "@short_key"), "shorter than 16 bytes"),
    # dashboard
    ("dashboard port", _plain("dashboard", "--port", "70000"),
     "argument --port: must be an integer 1..65535"),
    ("dashboard port text", _plain("dashboard", "--port", "http"), "argument --port"),
    # demo
    ("demo scale", _plain("demo", "--scale", "0", "--out", "@tmp"), "argument --scale"),
    ("demo days", _plain("demo", "--offline", "--days", "1", "--out", "@tmp"),
     "the demo needs --days >= 2"),
    ("demo port", _plain("demo", "--dashboard-port", "70000", "--out", "@tmp"),
     "argument --dashboard-port"),
    ("demo speed", _plain("demo", "--speed", "-1", "--out", "@tmp"), "argument --speed"),
    # the parser itself
    ("no arguments", _plain("replay"), "the following arguments are required: pings, --regions"),
    ("unknown command", _plain("replya"), "invalid choice: 'replya'"),
]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_command_ends_an_input_error_in_one_line(inputs: dict[str, Path], argv: Argv,
                                                       expected: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = _run(argv(inputs), capsys)
    assert rc == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("defacto: error: ") and expected in lines[0], lines[0]
    assert len(lines[0]) < 400


def test_every_command_is_walked() -> None:
    walked = {c[0].split()[0] for c in CASES}
    assert {"replay", "calibrate", "simulate", "produce", "worker", "dashboard", "demo"} <= walked


def test_worker_env_shim_exits_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                             inputs: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for args in (f"--regions {inputs['regions']} --res 16",
                 f"--regions {inputs['regions']} --calibration {inputs['calibration_dup']} "
                 f"--key-file {inputs['key']} --partitions 1"):
        monkeypatch.setenv("DEFACTO_WORKER_ARGS", args)
        with pytest.raises(SystemExit) as info:
            worker_app_from_env()
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("defacto: error: "), err


@pytest.mark.parametrize("extra", [["--res", "16"], ["--timezone", "Asia/Astana"],
                                   ["--cells", "cells_versioned"]])
def test_console_script_prints_no_traceback(inputs: dict[str, Path], extra: list[str]) -> None:
    extra = [str(inputs[x]) if x in inputs else x for x in extra]
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "replay", str(inputs["pings"]),
                           "--regions", str(inputs["regions"]), *extra],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("defacto: error: "), proc.stderr


# --- the right values -------------------------------------------------------------------------


def _last_snapshot(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


def test_the_plan_in_force_places_the_moved_cell(inputs: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # field case 01's reference: with the plan valid on the day, 20 in north and 20 in south
    rc, lines = _run(_replay()(inputs), capsys)
    assert rc == 0, lines
    regions = _last_snapshot(inputs["tmp"] / "snaps.jsonl")["regions"]
    assert regions["north"]["present"] == 20 and regions["south"]["present"] == 20
    assert regions["rural"]["present"] is None


def test_the_largest_allowed_factor_gives_finite_intervals(inputs: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    # fault 09: a factor of 1e155 used to crash the first snapshot; the limits keep far from it
    rc, lines = _run(_replay("--calibration", "@calibration_max", "--model-rse", "0.999")(inputs),
                     capsys)
    assert rc == 0, lines
    north = _last_snapshot(inputs["tmp"] / "snaps.jsonl")["regions"]["north"]
    assert north["present"] == 200_000
    assert 0 <= north["lo"] < 200_000 < north["hi"] < 1e7


def test_every_model_error_option_reaches_the_engine() -> None:
    """Each interval term given on the command line is the one the estimate uses."""
    import argparse

    from stream.cli.options import add_engine_options, engine_options

    values = {"model_rse": "0.011", "away_rse": "0.012", "sibling_away_rse": "0.013",
              "resident_model_rse": "0.014", "transition_rse": "0.31"}
    p = argparse.ArgumentParser()
    add_engine_options(p)
    argv = [x for name, v in values.items() for x in (ENGINE_LIMITS[name].option, v)]
    est = engine_options(p.parse_args(["--regions", "r.geojson", *argv])).engine_config().estimate
    assert {name: repr(getattr(est, name)) for name in values} == values


def test_calibrate_groups_the_options_that_do_not_change_its_factors(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    text = capsys.readouterr().out
    engine, _, other = text.partition("engine options without effect on the factors:")
    assert "accepted so that one set of engine options serves calibrate" in other
    def listed(name: str, part: str) -> bool:
        return f"\n  {name} " in part or f"\n  {name}\n" in part

    for name in ("--horizon", "--k", "--stale", "--move-window", "--no-foreign",
                 "--country-factors"):
        assert listed(name, other) and not listed(name, engine), name
    for name in ("--activity", "--night", "--min-nights", "--home-mcc", "--footprints"):
        assert listed(name, engine), name


def test_help_states_formats_and_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a time without a zone, or a bare date, is UTC" in text
    assert "ignore pings from this time on (excluded" in text
    assert "HH:MM-HH:MM in --timezone" in text and "a duration 1s..30d" in text
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ping file format (default jsonl)" in text and "a number in (0, 366]" in text
    with pytest.raises(SystemExit):
        main(["replay", "x.jsonl", "--regions", "r.geojson", "--night", "25:00-06:00"])
    assert "night window must be HH:MM-HH:MM with hours 0..23" in capsys.readouterr().err

"""``defacto replay`` and ``calibrate`` over a file, against a polars script and a parse-only
ceiling (a benchmark: prints figures, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/replay_speed.py                  # kz, scale 0.003, 3 days
    PYTHONPATH=. .venv/bin/python bench/replay_speed.py --rounds 3 --records
    PYTHONPATH=. .venv/bin/python bench/replay_speed.py --scale 0.0005 --rounds 1   # quick
    git worktree add --detach /tmp/base COMMIT && PYTHONPATH=. .venv/bin/python \
        bench/replay_speed.py --only replay --only "calibrate, 1 day" --baseline /tmp/base

Simulates the scenario once into ``--dir`` (JSON Lines; kept for later runs), then runs each
contender in its own process, ``--rounds`` times, interleaved (contender after contender, round
after round), and prints wall time (median and range), CPU time of the process (all threads),
peak RSS (with the reading process's, when there is one) and pings per second:

- ``replay``: ``defacto replay PINGS --regions --cells --registry --out`` as the CLI runs it
  (:func:`stream.cli.offline.run_replay`: reference files, decoding, windows, a snapshot per hour);
- ``replay, reader thread``: the same with ``--reader thread`` (the files read, parsed and
  prepared by threads of the engine's process; ``replay`` reads this 684 MB file in a second
  process, ``--reader auto``), snapshots compared byte for byte;
- ``replay, record reader`` (``--records``): the same with the per-row reader it replaced
  (:func:`stream.sources.ping_files.read_records` and ``PingDecoder.decode``), for before/after;
- ``polars peer``: a polars script doing a simplified version of the same job: the number of
  devices present in every region at every hour (last ping within the 6 h horizon, located through
  the cell plan or binned at res 8), without validation, calibration, residents, intervals or
  suppression; its counts are compared with the snapshots' ``devices``;
- ``parse only``: polars reading the file into the ping columns, nothing else (the ceiling);
- ``calibrate, 1 day``: ``defacto calibrate --from DAY2 --to DAY3`` on the same 3-day file,
  against the reference population, with the reader skipping what the period does not need, the
  footprint weights computed afresh (``DEFACTO_CACHE_DIR=off``), and (``--records``) without
  skipping (the whole file read, as before);
- ``calibrate, 1 day, reader thread``: the same with ``--reader thread``;
- ``calibrate, 1 day, warm cache`` (``--only``): the same with the footprint weights read from
  the disk cache (``DIR/footprint-cache``, filled by a run before the rounds); ``calibrate, 1
  day, warm cache, reader thread`` (``--only``) with ``--reader thread`` too;
- ``replay, with a calibration`` (``--only``): replay with ``--calibration`` (a day-2
  calibration carrying the reference population, made once into ``DIR``): border cells spread
  by ``reference``, so it tessellates too.

``--only NAME`` (repeatable) runs just those contenders; ``--baseline DIR`` (a checkout of older
code) also runs each replay and calibrate contender on that code, interleaved, as
``NAME [baseline]``: before and after in one run (the replays' snapshots are written apart,
``snapshots_*_baseline.jsonl``, and compared byte for byte).

The replay and calibrate contenders start as the ``defacto`` command does: the reading process
first when the run will likely read in one (:func:`stream.cli.reads_in_a_process`), then their
imports. Before the rounds each checkout's modules are byte-compiled, as installing a wheel does
(with ``PYTHONDONTWRITEBYTECODE`` set, as in this sandbox, every run would compile them anew).

The machine may be shared: the report starts and ends with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _usage() -> tuple[float, int]:
    """CPU seconds of this process (all threads) and of the processes it started and waited for
    (the reading process of ``--reader process``), and its peak RSS in bytes (``VmHWM``: unlike
    ``ru_maxrss`` it starts afresh at ``exec``, not at the parent's size) plus its children's
    largest (``ru_maxrss``): an upper bound on the memory held at once."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return (r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime,
            hwm * 1024 + c.ru_maxrss * 1024)


# ----------------------------------------------------------------------------------------------
# Contenders (each runs in its own process: `replay_speed.py --run NAME --dir DIR`)


def _paths(d: Path) -> Any:
    from stream.sources.reference_files import ReferencePaths

    return ReferencePaths(regions=d / "regions.geojson", cells=d / "cells.csv",
                          registry=d / "registry.csv")


def _feed_records(windows: Any, decoder: Any, pings: Any, period: Any = None,
                  reading: Any = None, outcomes: Any = None) -> None:
    """The replay's reading loop before the columnar reader: records, decoded row by row (the
    columnar chunks read ahead, ``reading``, are not used; nor the per-file ``outcomes``: the
    simulated file has no rejected row)."""
    from stream.sources.ping_files import read_records

    for chunk in read_records(pings):
        windows.feed(decoder.decode(chunk), lambda i, c=chunk: c[i].source, rows_read=len(chunk))


def _start_as_the_command(reader: str, pings: tuple[Path, ...]) -> None:
    """What ``defacto replay``/``calibrate`` do first (:func:`stream.cli.main`): start the
    reading process before their own imports when the run will likely read in one
    (:func:`stream.cli.reads_in_a_process`: ``reader`` and the size of ``pings``); code older
    than :mod:`stream.decode.child_start` has no such step."""
    try:
        from stream.cli import reads_in_a_process
        from stream.decode import child_start
    except ImportError:
        return
    if reads_in_a_process(["replay", *map(str, pings), "--reader", reader]):
        child_start.start_spare()


def run_replay(d: Path, records: bool, split: bool = False,
               calibrated: bool = False, reader: str = "auto") -> dict[str, Any]:
    pings = tuple(sorted(d.glob("pings_*.jsonl"))) if split else (d / "pings.jsonl",)
    _start_as_the_command(reader, pings)
    from stream.cli import offline

    if records:
        offline._feed_files = _feed_records  # type: ignore[assignment]
    name = "records" if records else "split" if split else "calibrated" if calibrated \
        else "columns" if reader == "auto" else f"columns_{reader}"
    out = d / f"snapshots_{name}{os.environ.get(OUT_SUFFIX, '')}.jsonl"
    reference = _paths(d)
    if calibrated:
        from dataclasses import replace

        reference = replace(reference, calibration=d / "calibration_day2.csv")
    config = offline.ReplayConfig(pings=pings, reference=reference,
                                  key_file=d / "key", out=out, rejects=d / "rejects.jsonl",
                                  **({"reader": reader} if reader != "auto" else {}))
    result = offline.run_replay(config)
    return {"summary": result.summary, "snapshots": result.snapshots, "out": str(out)}


def run_calibrate(d: Path, skip: bool, out: str = "", reader: str = "auto") -> dict[str, Any]:
    _start_as_the_command(reader, (d / "pings.jsonl",))
    from stream.cli import offline

    if not skip:
        offline._period = lambda *_a, **_k: None  # type: ignore[assignment]
    start = _first_hour(d) + DAY_MS
    path = d / (out or f"calibration_{'skip' if skip else 'all'}.csv")
    config = offline.CalibrateConfig(pings=(d / "pings.jsonl",),
                                     reference_population=d / "reference.csv",
                                     out=path,
                                     reference=_paths(d), key_file=d / "key",
                                     rejects=d / "rejects_calibrate.jsonl",
                                     start_ms=start, end_ms=start + DAY_MS,
                                     **({"reader": reader} if reader != "auto" else {}))
    result = offline.run_calibrate(config)
    return {"summary": result.summary, "skipped": result.skipped, "factors": path.read_text()}


def _first_hour(d: Path) -> int:
    with open(d / "pings.jsonl", "rb") as fh:
        return json.loads(fh.readline())["ts"] // HOUR_MS * HOUR_MS


SCHEMA_NAMES = ("device", "ts", "operator", "home_mcc", "cell", "lat", "lon")


def _schema() -> dict[str, Any]:
    import polars as pl

    return {"device": pl.String, "ts": pl.Int64, "operator": pl.String, "home_mcc": pl.Int64,
            "cell": pl.String, "lat": pl.Float64, "lon": pl.Float64}


def run_parse(d: Path) -> dict[str, Any]:
    import polars as pl

    df = pl.read_ndjson(d / "pings.jsonl", schema=_schema())
    return {"rows": df.height}


def run_peer(d: Path) -> dict[str, Any]:
    """Devices present per region and hour, the polars way (see the module docstring)."""
    import h3
    import numpy as np
    import polars as pl

    from estimators.h3vec import latlng_to_cell
    from stream.sources.reference_files import load_regions

    res, horizon = 8, 6 * HOUR_MS
    regions = load_regions(d / "regions.geojson")
    plan = pl.read_csv(d / "cells.csv", schema_overrides={"operator": pl.String, "cell": pl.String})
    plan = plan.with_columns(h3=pl.Series(latlng_to_cell(plan["lat"].to_numpy(),
                                                         plan["lon"].to_numpy(), res)))
    pings = pl.read_ndjson(d / "pings.jsonl", schema=_schema())
    pings = pings.join(plan.select("operator", "cell", pl.col("h3").alias("plan_h3")),
                       on=["operator", "cell"], how="left")
    lat, lon = pings["lat"].fill_null(0.0).to_numpy(), pings["lon"].fill_null(0.0).to_numpy()
    binned = latlng_to_cell(lat, lon, res)
    pings = pings.with_columns(h3=pl.when(pl.col("cell").is_not_null()).then(pl.col("plan_h3"))
                               .otherwise(pl.Series(binned)))
    cells = pings["h3"].unique().drop_nulls().to_numpy()
    centres = np.array([h3.cell_to_latlng(h3.int_to_str(int(c))) for c in cells]).reshape(-1, 2)
    region = regions.locate(centres[:, 0], centres[:, 1])
    cell_region = pl.DataFrame({"h3": cells, "region": region.astype(np.int64)})
    key = pl.struct("operator", "device").hash()  # one number per device (collisions: none seen)
    last = (pings.select(key.alias("key"), "ts", "h3").join(cell_region, on="h3", how="left")
            .sort(["key", "ts", "h3"])
            .with_columns(nxt=pl.when(pl.col("key") == pl.col("key").shift(-1))
                          .then(pl.col("ts").shift(-1)))
            .with_columns(first=pl.col("ts") // HOUR_MS + 1,
                          last=pl.min_horizontal(pl.col("nxt").fill_null(2**62),
                                                 pl.col("ts") + horizon - 1) // HOUR_MS))
    counts = (last.filter(pl.col("last") >= pl.col("first"))
              .select("region", hour=pl.int_ranges("first", pl.col("last") + 1))
              .explode("hour").group_by("hour", "region").len())
    n = len(regions.ids)
    table: dict[str, dict[str, int]] = {}
    for (hour,), part in counts.partition_by("hour", as_dict=True).items():
        leaf = np.zeros(n, dtype=np.int64)
        leaf[part["region"].to_numpy()] = part["len"].to_numpy()
        total = regions.subtree.astype(np.int64) @ leaf
        table[str(hour * HOUR_MS)] = {rid: int(v) for rid, v in zip(regions.ids, total.tolist(),
                                                                     strict=True)}
    (d / "peer_counts.json").write_text(json.dumps(table))
    return {"rows": pings.height, "hours": len(table)}


CONTENDERS = {
    "replay": lambda d: run_replay(d, records=False),
    "replay, reader thread": lambda d: run_replay(d, records=False, reader="thread"),
    "replay, one file per operator": lambda d: run_replay(d, records=False, split=True),
    "replay, record reader": lambda d: run_replay(d, records=True),
    "polars peer": run_peer,
    "parse only": run_parse,
    "calibrate, 1 day": lambda d: run_calibrate(d, skip=True),
    "calibrate, 1 day, reader thread": lambda d: run_calibrate(d, skip=True, reader="thread"),
    "calibrate, 1 day, warm cache": lambda d: run_calibrate(d, skip=True, out="calibration_warm.csv"),
    "calibrate, 1 day, warm cache, reader thread": lambda d: run_calibrate(
        d, skip=True, out="calibration_warm_thread.csv", reader="thread"),
    "calibrate, 1 day, whole file read": lambda d: run_calibrate(d, skip=False),
    "replay, with a calibration": lambda d: run_replay(d, records=False, calibrated=True),
}
CHILD_TIMEOUT_S = 1800
"""Longest a contender (or compiling a checkout) may take: a run past it stops the benchmark."""
BASELINE = " [baseline]"
"""Suffix of a contender run on the code of ``--baseline DIR``."""
OUT_SUFFIX = "REPLAY_BENCH_OUT_SUFFIX"
"""Environment variable: what a contender adds to the name of its snapshots file
(``_baseline`` on the baseline's code, so that both files can be compared)."""


def _env(name: str, d: Path) -> dict[str, str]:
    """The footprint weights cache of a contender: off (computed every run, as before the
    cache), but ``warm cache``: the bench folder's, filled before the rounds."""
    warm = "warm cache" in name.removesuffix(BASELINE)
    return {"DEFACTO_CACHE_DIR": str(d / "footprint-cache") if warm else "off"}


def _run_child(name: str, d: Path) -> None:
    t0 = time.perf_counter()
    out = CONTENDERS[name](d)
    wall = time.perf_counter() - t0
    cpu, rss = _usage()
    print(json.dumps({"wall": wall, "cpu": cpu, "rss": rss, **out}))


# ----------------------------------------------------------------------------------------------
# The parent: data, rounds, report


def _prepare(args: argparse.Namespace) -> tuple[Path, int]:
    d = Path(args.dir or f"/tmp/defacto-replay-bench-{args.scenario}-{args.scale}-{args.days}")
    if not (d / "pings.jsonl").exists():
        from stream.cli.offline import SimulateConfig, run_simulate

        print(f"simulating {args.scenario} at scale {args.scale} for {args.days} days -> {d}",
              file=sys.stderr)
        run_simulate(SimulateConfig(args.scenario, scale=args.scale, days=args.days,
                                    seed=args.seed, out=d))
    key = d / "key"
    if not key.exists():
        key.write_text("replay-bench-key-0123456789abcdef\n")
    if not list(d.glob("pings_*.jsonl")):  # the same pings as one file per operator
        import polars as pl

        lines = pl.read_csv(d / "pings.jsonl", has_header=False, separator="\x01", quote_char=None,
                            schema={"line": pl.String})
        op = lines["line"].str.extract(r'"operator":"([0-9]+)"')
        for (name,), part in lines.with_columns(op=op).partition_by("op", as_dict=True).items():
            (d / f"pings_{name}.jsonl").write_text("\n".join(part["line"].to_list()) + "\n")
    with open(d / "pings.jsonl", "rb") as fh:
        rows = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b""))
    return d, rows


def _child(name: str, d: Path, baseline: Path | None = None) -> dict[str, Any]:
    root = baseline if name.endswith(BASELINE) and baseline else ROOT
    env = {**os.environ, "PYTHONPATH": str(root), **_env(name, d),
           OUT_SUFFIX: "_baseline" if name.endswith(BASELINE) else ""}
    proc = subprocess.run([sys.executable, __file__, "--run", name.removesuffix(BASELINE),
                           "--dir", str(d)],
                          capture_output=True, text=True, env=env, check=False, timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compile(root: Path) -> None:
    """Byte-compile a checkout's modules once, as installing a wheel does: with
    ``PYTHONDONTWRITEBYTECODE`` set (this sandbox sets it) every contender would otherwise
    compile defacto's modules from source at its start (~0.13 s), while the installed packages
    (numpy, polars) load compiled. A module that does not compile stops the benchmark."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "stream", "estimators"], cwd=root,
                   check=True, stdout=subprocess.DEVNULL, timeout=CHILD_TIMEOUT_S)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _compare_counts(d: Path) -> str:
    """How many region-hours the polars peer's device counts equal the snapshots' ``devices``."""
    peer = json.loads((d / "peer_counts.json").read_text())
    from stream.timefmt import parse_iso_ms

    same = differ = 0
    with open(d / "snapshots_columns.jsonl") as fh:
        for line in fh:
            snap = json.loads(line)
            counts = peer.get(str(parse_iso_ms(snap["at"])), {})
            for rid, fig in snap["regions"].items():
                if fig["devices"] is None:
                    continue
                if counts.get(rid, 0) == fig["devices"]:
                    same += 1
                else:
                    differ += 1
    return f"{same} region-hours equal, {differ} differ (suppressed ones not compared)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="kz")
    p.add_argument("--scale", type=float, default=0.003)
    p.add_argument("--days", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", help="where the simulated files are (made if missing)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each contender, interleaved")
    p.add_argument("--records", action="store_true",
                   help="also the replay and calibrate as they read before (slow)")
    p.add_argument("--only", action="append", choices=list(CONTENDERS), metavar="NAME",
                   help="run only this contender (repeat for several, in that order; default: "
                        "all but the --records ones): " + "; ".join(CONTENDERS))
    p.add_argument("--baseline", help="a checkout of older code (e.g. `git worktree add DIR "
                   "COMMIT`): replay and calibrate also run on it, interleaved, as NAME [baseline]")
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        _run_child(args.run, Path(args.dir))
        return
    d, rows = _prepare(args)
    names = ["replay", "replay, reader thread", "replay, one file per operator", "polars peer",
             "parse only", "calibrate, 1 day", "calibrate, 1 day, reader thread"]
    if args.records:
        names += ["replay, record reader", "calibrate, 1 day, whole file read"]
    if args.only:
        names = list(dict.fromkeys(args.only))
    baseline = Path(args.baseline).resolve() if args.baseline else None
    if baseline:
        names = [m for n in names for m in
                 ((n, n + BASELINE) if n.startswith(("replay", "calibrate")) else (n,))]
    if any(n.startswith("replay, with a calibration") for n in names) and \
            not (d / "calibration_day2.csv").exists():  # the reference population, for replay
        _child("calibrate, 1 day", d)
        (d / "calibration_skip.csv").rename(d / "calibration_day2.csv")
    for root in (ROOT, baseline):
        if root is not None:
            _compile(root)
    for name in names:
        if "warm cache" in name:  # fill the cache (a run not counted)
            _child(name, d)
    print(f"load average at start: {_load()} (the machine may be shared with other runs)")
    print(f"file: {d / 'pings.jsonl'} ({(d / 'pings.jsonl').stat().st_size / 1e6:.0f} MB, "
          f"{rows:,} pings), {args.rounds} round(s), contenders interleaved")
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            results[name].append(_child(name, d, baseline))
    print(f"load average at end: {_load()}")
    print()
    print(f"{'contender':40s} {'wall s (range)':>22s} {'CPU s':>7s} {'peak RSS':>9s} "
          f"{'pings/s':>10s}")
    wall_of: dict[str, float] = {}
    for name in names:
        runs = [r for r in results[name] if "error" not in r]
        if not runs:
            print(f"{name:40s} failed: {results[name][0]['error']}")
            continue
        walls = [r["wall"] for r in runs]
        wall = statistics.median(walls)
        wall_of[name] = wall
        cpu = statistics.median(r["cpu"] for r in runs)
        rss = max(r["rss"] for r in runs) / 2**20
        rng = f"{wall:7.2f} ({min(walls):.2f}-{max(walls):.2f})"
        rate = f"{rows / wall / 1e3:8.0f} k" if not name.startswith("calibrate") else ""
        print(f"{name:40s} {rng:>22s} {cpu:7.2f} {rss:7.0f} Mi {rate:>10s}")
    print()
    if "replay" in wall_of and "polars peer" in wall_of:
        print(f"replay / polars peer: {wall_of['polars peer'] / wall_of['replay']:.2f}x "
              "(above 1: replay faster)")
    if "replay" in wall_of and "parse only" in wall_of:
        print(f"replay / parse-only ceiling: {wall_of['parse only'] / wall_of['replay']:.2f}x")
    if "replay, record reader" in wall_of and "replay" in wall_of:
        print(f"replay / replay with the record reader: "
              f"{wall_of['replay, record reader'] / wall_of['replay']:.2f}x faster")
        same = (d / "snapshots_columns.jsonl").read_bytes() == \
            (d / "snapshots_records.jsonl").read_bytes()
        print(f"snapshots of the two readers byte-identical: {same}")
    if "replay, reader thread" in wall_of and "replay" in wall_of:
        same = (d / "snapshots_columns.jsonl").read_bytes() == \
            (d / "snapshots_columns_thread.jsonl").read_bytes()
        print(f"replay (--reader auto: a second process here) / replay, reader thread: "
              f"{wall_of['replay, reader thread'] / wall_of['replay']:.2f}x faster; snapshots "
              f"byte-identical: {same}")
    if "replay, one file per operator" in wall_of:
        same = (d / "snapshots_columns.jsonl").read_bytes() == \
            (d / "snapshots_split.jsonl").read_bytes()
        print(f"one file per operator ({len(list(d.glob('pings_*.jsonl')))} files, merged by "
              f"event time): snapshots byte-identical to the one file: {same}")
    for suffix in ("", BASELINE):
        for cal in ("calibrate, 1 day", "calibrate, 1 day, warm cache",
                    "calibrate, 1 day, warm cache, reader thread"):
            if cal + suffix in wall_of and "replay" + suffix in wall_of:
                print(f"{cal + suffix} / full replay{suffix}: "
                      f"{wall_of[cal + suffix] / wall_of['replay' + suffix]:.2f} of the time")
    factors = {n: r[-1]["factors"] for n, r in results.items()
               if n.startswith("calibrate, 1 day") and "whole file" not in n
               and r and "factors" in r[-1]}
    if len(factors) > 1:
        print(f"calibration files of {', '.join(factors)} identical: "
              f"{len(set(factors.values())) == 1}")
    if "calibrate, 1 day" in wall_of and "replay" in wall_of:
        last = results["calibrate, 1 day"][-1]
        for note in last.get("skipped", []):
            print(f"  calibrate: {note}")
    if "calibrate, 1 day, whole file read" in wall_of:
        a, b = results["calibrate, 1 day"][-1], results["calibrate, 1 day, whole file read"][-1]
        print(f"calibrate, factors with and without skipping identical: {a['factors'] == b['factors']}")
    for name, stem in (("replay", "columns"), ("replay, one file per operator", "split"),
                       ("replay, with a calibration", "calibrated")):
        if name in wall_of and name + BASELINE in wall_of:
            same = (d / f"snapshots_{stem}.jsonl").read_bytes() == \
                (d / f"snapshots_{stem}_baseline.jsonl").read_bytes()
            print(f"{name}: snapshots byte-identical to the baseline's: {same}; "
                  f"baseline / this code: {wall_of[name + BASELINE] / wall_of[name]:.2f}x wall")
    if "polars peer" in wall_of and (d / "snapshots_columns.jsonl").exists():
        print(f"polars peer against the snapshots' devices: {_compare_counts(d)}")
    if results.get("replay"):
        print(f"replay summary: {results['replay'][-1].get('summary', '?')}")


if __name__ == "__main__":
    main()

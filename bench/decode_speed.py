"""Frame decoding speed on one core, stage by stage (a benchmark: prints figures, asserts nothing).

    python bench/decode_speed.py [--scale 0.1] [--days 0.3] [--frame-rows 20000] [--repeat 3]
                                 [--compare DIR ...]

The live worker's hot path for batch frames, in-process (no broker): simulated astana pings are
encoded as frames (:func:`stream.decode.frame.encode_frame`, ``--frame-rows`` pings each, the
size ``bench/live_throughput.py`` sends), then each frame goes through
:func:`stream.decode.messages.decode_messages`, :meth:`PingDecoder.decode_columns` and
:meth:`Engine.ingest`, as :meth:`PartitionState.process` does (without the windows). Prints ns
per ping for each stage, and pings/s and pings per CPU-s of the three together:

``frame decode``   ``decode_messages``: header, zero-copy views, the contract's type rules;
``plan lookup``    ``PingDecoder._plan_rows`` (polars join; before) or ``_plan_rows_of_bytes``
                   (:class:`~stream.decode.validate.PlanTable`): (operator, cell) → plan row;
``device keys``    ``_NumpyGroup.keys``: keyed SipHash of each device pseudonym;
``operator codes`` ``PingDecoder._register``, ``_known_operators`` and
                   ``_NumpyGroup.operators/operator_codes``;
``lat/lon``        ``CellTable.locate_latlng`` (exact regions) of the lat/lon pings;
``locations, rest`` the rest of ``PingDecoder._locations`` (plan rows → cells);
``checks, rest``   the rest of ``decode_columns``: range checks, rejects, the batch;
``engine ingest``  ``Engine.ingest``.

Stages are timed in CPU time (``time.process_time``: a busy machine's other processes do not
count) by wrapping those functions (they keep these names across versions). The process is
pinned to one CPU before numpy/polars start, so polars runs one thread. ``--compare DIR`` runs
the same measurement, on the same frames, with the code of another checkout
(``PYTHONPATH=DIR``), interleaved with this one (A B A B ...), each in a fresh process, and
checks that both give the same output (keys, times, classes, locations, rows and every reject)
and the same engine: its device state with rows in device-key order (the row numbers given to
new devices are internal), its tally and its estimate after the last frame.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

STAGES = ("frame decode", "plan lookup", "device keys", "operator codes", "lat/lon",
          "locations, rest", "checks, rest", "engine ingest")
SECRET = b"decode-speed-bench-secret-0123456789"


def _pin_one_cpu() -> int | None:
    """Pin this process to one CPU (before numpy/polars create thread pools)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


# ------------------------------------------------------------------------------------------------
# Input


def make_input(scale: float, days: float, seed: int, frame_rows: int, max_pings: int | None,
               path: Path) -> dict[str, Any]:
    """Simulate astana, encode its pings as frames, and write them with the reference data."""
    import numpy as np

    from stream.decode.frame import encode_frame
    from stream.simulator import simulate
    from stream.sources.simulation import simulation_columns

    t0 = time.perf_counter()
    sim = simulate("astana", scale=scale, days=days, seed=seed)
    frames: list[bytes] = []
    n = ts_max = 0
    for chunk in sim.hours():
        cols = simulation_columns(sim, chunk)
        order = np.argsort(cols["ts"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        for lo in range(0, len(order), frame_rows):
            frames.append(encode_frame({k: v[lo:lo + frame_rows] for k, v in cols.items()}))
            n += min(frame_rows, len(order) - lo)
        ts_max = max(ts_max, int(cols["ts"].max()) if len(order) else 0)
        if max_pings is not None and n >= max_pings:
            break
    plan = sim.cell_plan
    doc = {
        "frames": frames,
        "regions": sim.regions_geojson,
        "plan": {"operator": [sim.operators[o] for o in plan["operator"].tolist()],
                 "cell": [str(c) for c in plan["cell"].tolist()],
                 "lat": np.asarray(plan["lat"], dtype=np.float64),
                 "lon": np.asarray(plan["lon"], dtype=np.float64)},
        "now_ms": ts_max + 3_600_000,
        "pings": n,
        "devices": sim.n_devices,
    }
    path.write_bytes(pickle.dumps(doc))
    print(f"input: astana scale {scale}, {days} days: {sim.n_devices:,} devices, {n:,} pings in "
          f"{len(frames):,} frames of {frame_rows:,} (built in {time.perf_counter() - t0:.1f} s)",
          flush=True)
    return doc


# ------------------------------------------------------------------------------------------------
# One measurement (in a fresh process)


class _Clock:
    """Seconds spent in wrapped functions, by stage (nested stages are subtracted by hand)."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:
            return
        clock = self.s

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                clock[stage] += time.process_time() - t

        setattr(owner, name, timed)


def measure(input_path: Path) -> dict[str, Any]:
    """Decode and ingest every frame of the input once; seconds per stage and a digest of the
    output."""
    import numpy as np

    from estimators.regions import regions_from_geojson
    from stream.decode import validate
    from stream.decode.messages import decode_messages
    from stream.estimate.engine_options import EngineOptions, build_engine
    from stream.sources.reference_files import CellPlanRows, Reference

    doc = pickle.loads(input_path.read_bytes())
    p = doc["plan"]
    nan = np.full(len(p["cell"]), np.nan)
    plan = CellPlanRows(p["operator"], p["cell"], p["lat"], p["lon"], nan, nan)
    engine = build_engine(EngineOptions(), Reference(regions_from_geojson(doc["regions"]), None,
                                                     None, plan))
    decoder = validate.PingDecoder(engine, SECRET, now_ms=doc["now_ms"])

    clock = _Clock()
    dec = validate.PingDecoder
    for name in ("_plan_rows", "_plan_rows_of_bytes"):
        clock.wrap(dec, name, "plan lookup")
    for name in ("keys", "hashes"):
        clock.wrap(validate._NumpyGroup, name, "device keys")
    for name in ("_register", "_known_operators"):
        clock.wrap(dec, name, "operator codes")
    for name in ("operators", "operator_codes"):
        clock.wrap(validate._NumpyGroup, name, "operator codes")
    clock.wrap(engine.cells, "locate_latlng", "lat/lon")
    clock.wrap(dec, "_locations", "locations")

    digest = hashlib.sha256()
    total: dict[str, float] = defaultdict(float)
    pings = rejects = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i, frame in enumerate(doc["frames"]):
        t0 = time.process_time()
        decoded = decode_messages([frame], None, source=str)
        t1 = time.process_time()
        batch = decoder.decode_columns(decoded.columns, lambda j, i=i: f"frame {i}")
        t2 = time.process_time()
        engine.ingest(batch.device_key, batch.ts_ms, batch.opclass, batch.loc, batch.home_mcc)
        t3 = time.process_time()
        total["frame decode"] += t1 - t0
        total["validate"] += t2 - t1
        total["engine ingest"] += t3 - t2
        pings += len(decoded.source_rows) + len(decoded.rejects)
        rejects += len(batch.rejects) + len(decoded.rejects)
        for a in (batch.device_key, batch.ts_ms, batch.opclass, batch.loc, batch.row, batch.home_mcc):
            digest.update(np.ascontiguousarray(a).tobytes())
        for r in [*decoded.rejects, *batch.rejects]:
            digest.update(repr((r.source, r.reason, r.detail, r.record)).encode())
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    engine_digest = _engine_digest(engine, doc["now_ms"])
    s = clock.s
    stages = {
        "frame decode": total["frame decode"],
        "plan lookup": s["plan lookup"],
        "device keys": s["device keys"],
        "operator codes": s["operator codes"],
        "lat/lon": s["lat/lon"],
        "locations, rest": s["locations"] - s["lat/lon"],
        "checks, rest": total["validate"] - s["plan lookup"] - s["device keys"]
        - s["operator codes"] - s["locations"],
        "engine ingest": total["engine ingest"],
    }
    return {"pings": pings, "rejects": rejects, "wall_s": wall, "cpu_s": cpu, "stages_s": stages,
            "digest": digest.hexdigest(), "engine_digest": engine_digest,
            "operators": list(engine.operators)}


def _engine_digest(engine: Any, at_ms: int) -> str:
    """Digest of the engine after the run: its device state with rows in device-key order (and
    the foreign SIMs' rows in theirs: row numbers are internal), then its tally and estimate at
    ``at_ms`` (the figures)."""
    import numpy as np

    state = engine.capture_state()
    n = engine.state.n_devices
    order = np.argsort(state["key"], kind="stable")
    foreign = state.get("fgn_p_key")  # foreign SIMs' rows: their own numbering
    f_order = None if foreign is None else np.argsort(foreign, kind="stable")
    digest = hashlib.sha256()
    for name in sorted(state):
        a = np.asarray(state[name])
        if name.startswith("fgn_") and f_order is not None and a.ndim and a.shape[0] == len(
                f_order) and name != "fgn_countries":
            a = a[f_order]
        elif a.ndim and a.shape[0] == n and name not in ("loc_cell", "loc_region"):
            a = a[order]
        digest.update(name.encode() + str(a.dtype).encode() + np.ascontiguousarray(a).tobytes())
    tally = engine.tally(at_ms)
    digest.update(pickle.dumps(tally))
    digest.update(pickle.dumps(engine.estimate_tally(tally)))
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------
# Driver


def _run_child(code_dir: Path, input_path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(input_path)],
                         env=env, cwd=str(code_dir), capture_output=True, text=True, timeout=3600,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"measurement with {code_dir} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def report(label_runs: dict[str, list[dict[str, Any]]]) -> None:
    """Print ns per ping per stage (median of the runs) and the end-to-end rates, side by side."""
    labels = list(label_runs)
    n = label_runs[labels[0]][0]["pings"]
    width = max(14, *(len(lb) for lb in labels))
    print(f"\nCPU ns per ping (median of {len(label_runs[labels[0]])} runs, one CPU, {n:,} pings)")
    print(f"  {'stage':<16}" + "".join(f"{lb:>{width + 2}}" for lb in labels))
    for stage in STAGES:
        cells = [_median([r["stages_s"][stage] for r in runs]) / n * 1e9
                 for runs in label_runs.values()]
        print(f"  {stage:<16}" + "".join(f"{c:>{width + 2}.0f}" for c in cells))
    tot = [_median([sum(r["stages_s"].values()) for r in runs]) / n * 1e9
           for runs in label_runs.values()]
    print(f"  {'total':<16}" + "".join(f"{c:>{width + 2}.0f}" for c in tot))
    dec = [_median([sum(v for k, v in r["stages_s"].items() if k != "engine ingest")
                    for r in runs]) / n * 1e9 for runs in label_runs.values()]
    print(f"  {'decoding only':<16}" + "".join(f"{c:>{width + 2}.0f}" for c in dec))
    print("\ndecode + ingest, one CPU")
    for lb, runs in label_runs.items():
        walls = [n / r["wall_s"] for r in runs]
        cpus = [n / r["cpu_s"] for r in runs]
        print(f"  {lb:<{width}}  {_median(walls):>12,.0f} pings/s wall "
              f"(runs {min(walls):,.0f}..{max(walls):,.0f}), {_median(cpus):>12,.0f} pings per CPU-s; "
              f"{runs[0]['rejects']:,} rejects")
    digests = {lb: {r["digest"] for r in runs} for lb, runs in label_runs.items()}
    same = len(set().union(*digests.values())) == 1
    print(f"\nsame output (keys, times, classes, locations, rows, rejects) in every run: "
          f"{'yes' if same else 'NO'}")
    engines = {r.get("engine_digest") for runs in label_runs.values() for r in runs}
    print(f"same engine state (by device key), tally and estimate in every run: "
          f"{'yes' if len(engines) == 1 else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=0.1, help="astana population scale")
    p.add_argument("--days", type=float, default=0.3, help="simulated days")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--frame-rows", type=int, default=20_000, help="pings per frame")
    p.add_argument("--max-pings", type=int, help="stop simulating after this many pings")
    p.add_argument("--repeat", type=int, default=3, help="measurements per code version")
    p.add_argument("--compare", action="append", default=[], metavar="DIR",
                   help="also measure the code of this checkout (repeatable)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cpu = _pin_one_cpu()
    if args.child:
        print(json.dumps(measure(Path(args.child))))
        return 0
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="decode-speed-") as tmp:
        input_path = Path(tmp) / "input.pkl"
        make_input(args.scale, args.days, args.seed, args.frame_rows, args.max_pings, input_path)
        dirs = {"this": here, **{f"compare{k + 1}" if len(args.compare) > 1 else "compare":
                                 Path(d).resolve() for k, d in enumerate(args.compare)}}
        for lb, d in dirs.items():
            print(f"{lb}: {d}")
        runs: dict[str, list[dict[str, Any]]] = {lb: [] for lb in reversed(dirs)}
        for k in range(args.repeat):
            for lb in runs:  # interleaved: a slow spell on the shared machine hits every version
                r = _run_child(dirs[lb], input_path)
                runs[lb].append(r)
                print(f"  run {k + 1} {lb}: {r['pings'] / r['wall_s']:,.0f} pings/s", flush=True)
    print(f"pinned to CPU {cpu}; python {sys.version.split()[0]}")
    report(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU seconds of each thread of one ``defacto replay`` (a benchmark: prints figures, asserts
nothing): where a replay's CPU goes between the engine's thread, the reading and preparing
threads, polars' own threads and the snapshot thread.

    PYTHONPATH=. .venv/bin/python bench/replay_threads.py --dir /tmp/replay-bench

Runs the ``replay`` contender of ``bench/replay_speed.py`` (the files of ``--dir``, made by its
first run) in this process while a sampler thread reads every thread's user + system time from
``/proc/self/task/*/stat`` every 50 ms (a thread's last reading counts: a thread that lives less
than 50 ms may be missed). Python threads are named as ``threading`` names them; other threads
by their OS name (polars' parsing threads are ``async-*``/``polars-*``). Linux only.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _task_cpu(tick: int) -> dict[int, tuple[float, str]]:
    """CPU seconds and OS name of every thread of this process, by thread id."""
    out: dict[int, tuple[float, str]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                head, tail = fh.read().rsplit(")", 1)
        except OSError:  # the thread ended meanwhile
            continue
        fields = tail.split()
        out[int(tid)] = ((int(fields[11]) + int(fields[12])) / tick, head.split("(", 1)[1])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/tmp/replay-bench", help="bench/replay_speed.py's --dir")
    args = p.parse_args()
    os.environ.setdefault("DEFACTO_CACHE_DIR", "off")
    tick = os.sysconf("SC_CLK_TCK")
    seen: dict[int, tuple[float, str]] = {}
    names: dict[int, str] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for t in threading.enumerate():
                if t.native_id is not None:
                    names.setdefault(t.native_id, t.name)
            seen.update(_task_cpu(tick))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    sys.path.insert(0, str(ROOT / "bench"))
    import replay_speed

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    replay_speed.run_replay(Path(args.dir), records=False)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    by_name: dict[str, float] = {}
    for tid, (cpu, comm) in seen.items():
        name = names.get(tid, f"{comm.split('-')[0]} (OS thread)")
        if name != "sampler":
            by_name[name] = by_name.get(name, 0.0) + cpu
    print(f"replay of {args.dir}: {wall:.2f} s wall (imports before it not counted), "
          f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    for name, cpu in sorted(by_name.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {cpu:6.2f} CPU-s")
    print(f"  {'all threads':28s} {sum(by_name.values()):6.2f} CPU-s")


if __name__ == "__main__":
    main()

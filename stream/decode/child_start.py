"""Starting the preparing process of :mod:`stream.decode.prepare_process` (standard library only).

The child is a fresh interpreter: before it reads a byte it imports numpy, polars and defacto's
decoder, about 0.4 s of one core. So that this does not wait until the command has done its own
imports (as long again), the ``defacto`` command starts one at its entry, for ``replay`` and
``calibrate`` runs that will likely read in a process (:func:`start_spare`, called before any
heavy import: this module imports the standard library only).
:class:`~stream.decode.prepare_process.PreparingProcess` takes it (:func:`take_spare`) or starts
its own (:func:`start_child`); a run that reads in threads drops it (:func:`drop_spare`), as
does the command's end, however it ends. The child imports and then waits for its job on the
control pipe: a control pipe closed before the job ends it, and a spare never changes what a run
computes, only when its first chunk is read.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import stat
import subprocess
import sys
import threading

PROCESS_MIN_BYTES = 256 << 20
"""Input size (bytes of the ping files, as stored) from which ``--reader auto`` reads in a second
process: below it, starting one (~0.5 CPU-s of imports) costs more than it saves (on 2 cores,
measured: 74 MB 2.28 s against 2.15 s with threads, 211 MB even, 684 MB 1.08x faster)."""
_PIPE_BYTES = 1 << 20
"""The data pipe's buffer (Linux's default 64 KiB would wake the parent every 64 KiB of a ~4 MB
chunk; 1 MiB is what an unprivileged process may ask for by default)."""
_END_WAIT_S = 2.0
"""How long :meth:`Child.end` waits for a terminated child to end before it is killed."""


class Child:
    """A started preparing process and this process's ends of its pipes: ``data_fd`` (read: the
    chunks) and ``control_fd`` (write: the job, then "stop"). The pipes belong to whoever
    takes the child: :meth:`end` closes them, or the taker wraps them in connections that do."""

    __slots__ = ("control_fd", "data_fd", "proc")

    def __init__(self, proc: subprocess.Popen[bytes], data_fd: int, control_fd: int) -> None:
        self.proc = proc
        self.data_fd = data_fd
        self.control_fd = control_fd

    def end(self) -> None:
        """Close both pipes and end the child (terminated: it holds no job; killed after
        :data:`_END_WAIT_S`); idempotent."""
        for fd in (self.control_fd, self.data_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.control_fd = self.data_fd = -1
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(_END_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(_END_WAIT_S)


def start_child() -> Child:
    """Start a preparing process: ``python -c`` with this interpreter and ``sys.path`` (not
    ``multiprocessing``'s spawn, which would run the caller's main module again), in a process
    group of its own, so that a terminal's Ctrl-C reaches this process only, which stops it (it
    also ignores SIGINT from its first line of code on). Once it has imported, it waits for its
    job (:func:`stream.decode.prepare_process.main`). Raises ``OSError`` when it cannot be
    started."""
    data_r, data_w = os.pipe()
    control_r, control_w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # fewer wake-ups per chunk (Linux)
        fcntl.fcntl(data_r, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined]
    boot = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            f"import sys; sys.path[:0] = {[p for p in sys.path if p]!r}; "
            f"from stream.decode.prepare_process import main; main({data_w}, {control_r})")
    try:
        proc = subprocess.Popen([sys.executable, "-c", boot], pass_fds=(data_w, control_r),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                process_group=0)
    except BaseException:
        for fd in (data_r, data_w, control_r, control_w):
            os.close(fd)
        raise
    os.close(data_w)  # only the child writes: its end gone, a dead child reads as EOF
    os.close(control_r)
    return Child(proc, data_r, control_w)


def usable_cores() -> int:
    """The cores this process may run on (Linux's affinity), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def input_bytes(words: list[str]) -> int:
    """The bytes of the regular files among ``words`` (a command line's: its ping files, and
    its small reference files beside them); words that name no such file count 0."""
    total = 0
    for word in words:
        with contextlib.suppress(OSError, ValueError):
            st = os.stat(word)
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


_spare: Child | None = None
_lock = threading.Lock()


def start_spare() -> bool:
    """Start a preparing process ahead of need (one at a time; none on a single core, where its
    imports would only slow this process's). Returns whether one is waiting. It is dropped at
    this interpreter's exit if nobody took it."""
    global _spare
    with _lock:
        if _spare is not None:
            return True
        if usable_cores() < 2:
            return False
        try:
            _spare = start_child()
        except OSError:
            return False  # the run starts its own, and says why if that fails too
    return True


def take_spare() -> Child | None:
    """The spare started by :func:`start_spare`, if any and still alive; it is the caller's now."""
    global _spare
    with _lock:
        child, _spare = _spare, None
    if child is not None and child.proc.poll() is not None:  # it died: start afresh
        child.end()
        return None
    return child


def drop_spare() -> None:
    """End the spare, if one is waiting (a run reading in threads, or the command's end)."""
    child = take_spare()
    if child is not None:
        child.end()


atexit.register(drop_spare)

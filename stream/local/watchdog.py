"""Stop an embedded server whose starter died without stopping it (a SIGKILL, an OOM kill).

Run as a script, not imported by it (it must start in a few milliseconds and import nothing of
defacto): ``python -I -S watchdog.py PID SIGNAL``. It reads its stdin to the end. The starter
holds the pipe's only write end, so the end comes when the starter closes it or dies, whatever
killed it. :meth:`stream.local.embedded.Service.stop` writes :data:`STOPPED` first: the server
is already stopped, nothing to do. Without it, the watchdog sends ``SIGNAL`` (the server's own
stop signal) to the server's process group (the server leads its own session), then SIGKILL
after :data:`GRACE_S`.

The server is held by a pidfd (Linux ≥ 5.3) from the watchdog's start, so a process id reused
after the server exited is never signalled; without pidfds, only while ``PID`` still leads a
session of its own and is not a zombie.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

STOPPED = b"stopped\n"
"""What the starter writes before closing the pipe when it has stopped the server itself."""

GRACE_S = 10.0
"""Seconds between the stop signal and SIGKILL."""


def _open(pid: int) -> int | None:
    """A pidfd of ``pid``, or None where pidfds are not available."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _runs(pid: int, pidfd: int | None) -> bool:
    """The server has not exited (a pidfd turns readable when its process exits)."""
    if pidfd is not None:
        return not select.select([pidfd], [], [], 0)[0]
    try:
        if os.getsid(pid) != pid:
            return False
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (ProcessLookupError, PermissionError):
        return False
    except (OSError, IndexError):
        return True


def main(argv: list[str]) -> int:
    pid, stop_signal = int(argv[1]), int(argv[2])
    pidfd = _open(pid)
    if sys.stdin.buffer.read() == STOPPED:
        return 0
    for sig, wait_s in ((stop_signal, GRACE_S), (signal.SIGKILL, 0.0)):
        if not _runs(pid, pidfd):
            return 0
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return 0
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _runs(pid, pidfd):
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

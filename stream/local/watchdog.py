"""Stop an embedded server whose starter died without stopping it (a SIGKILL, an OOM kill).

Run as a script, not imported (it must start in a few milliseconds and import nothing of
defacto): ``python -I -S watchdog.py PID``. It reads its stdin to the end. The starter holds the
pipe's only write end, so the end comes when the starter closes it or dies, whatever killed it.
:meth:`stream.local.embedded.Service.stop` writes :data:`STOPPED` first: the server is already
stopped, nothing to do. Without it, the watchdog sends SIGTERM to the server's process group
(the server leads its own session), then SIGKILL after :data:`GRACE_S`.

The process group is signalled only while ``PID`` still leads a session of its own, so a process
id reused since cannot be hit unless it too leads one.
"""

from __future__ import annotations

import os
import signal
import sys
import time

STOPPED = b"stopped\n"
"""What the starter writes before closing the pipe when it has stopped the server itself."""

GRACE_S = 10.0
"""Seconds between SIGTERM and SIGKILL."""


def _leads_its_session(pid: int) -> bool:
    """``pid`` runs (not a zombie waiting for its new parent to reap it) and leads a session."""
    try:
        if os.getsid(pid) != pid:
            return False
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def main(argv: list[str]) -> int:
    pid = int(argv[1])
    if sys.stdin.buffer.read() == STOPPED:
        return 0
    for sig, wait_s in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
        if not _leads_its_session(pid):
            return 0
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return 0
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _leads_its_session(pid):
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

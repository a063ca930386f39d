"""Stop signals for commands that start servers in sessions of their own (``local``, ``demo``).

Such servers do not get the terminal's Ctrl-C, so the command must stop them however it is
told to stop: SIGINT, SIGTERM or SIGHUP, once, and not be cut short by a repeated one.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType


class SignalledError(BaseException):
    """SIGTERM or SIGHUP arrived: stop the servers as Ctrl-C does. A ``BaseException``, as
    ``KeyboardInterrupt`` is, so that no ``except Exception`` on the way (a probe's retry loop)
    swallows it."""


@dataclass
class StopRequest:
    """The first stop signal that arrived, if any: noted without raising while a server was
    being spawned, and a flag beside the exception for a place that swallowed it all the
    same; :meth:`go_on` acts on it."""

    signal: int | None = None

    def raise_it(self) -> None:
        """Raise what the signal stands for: ``KeyboardInterrupt`` (SIGINT) or
        :class:`SignalledError`."""
        raise KeyboardInterrupt if self.signal == signal.SIGINT else SignalledError

    def go_on(self) -> None:
        """Raise (:meth:`raise_it`) if a stop signal came."""
        if self.signal is not None:
            self.raise_it()


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[StopRequest]:
    """While inside: the first SIGINT, SIGTERM or SIGHUP raises (``KeyboardInterrupt``,
    :class:`SignalledError`), and later ones are ignored, so that stopping the servers is not
    itself interrupted (which would leave them running in their own sessions). Once a signal
    has come they stay ignored after the block too: the process is ending with the exit code
    of that stop, whenever a repeated signal arrives. While a server is being spawned
    (:func:`~stream.local.embedded.interruptible` is False) the first signal is only noted in
    the yielded :class:`StopRequest`, and raised as the spawning block ends (the process is then
    registered for stopping); callers may also act on it (:meth:`StopRequest.go_on`)."""
    from stream.local.embedded import after_spawning, interruptible

    request = StopRequest()

    def stop(sig: int, _frame: FrameType | None) -> None:
        if request.signal is not None:
            return
        request.signal = sig
        if interruptible():
            request.raise_it()

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    forget = after_spawning(request.go_on)  # a stop noted while spawning, once registered
    try:
        yield request
    finally:
        forget()
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if request.signal is not None else handler)

"""Repeated log lines of the Kafka client, held back: one line per message per minute.

While the broker is unreachable aiokafka logs every failed connection, fetch and metadata update
(about 65 lines a second per worker, measured when the embedded broker was stopped under two
workers), burying the worker's own lines (``Redis unavailable``, ``topic check failed``). The
worker goes on retrying, as it should; :class:`RepeatFilter` lets the first line of each message
through and then one per ``every_s``, saying how many like it were held back meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

REPEAT_EVERY_S = 60.0
"""How often one message of the Kafka client may be logged again."""
NOISY_LOGGERS = "aiokafka"
"""The loggers (by name prefix) whose repeats are held back."""


class RepeatFilter(logging.Filter):
    """Pass a record unless the same logger logged the same message (its format string, so
    lines that differ only in a node id or an error text count as one) less than ``every_s``
    ago; the next one that passes says how many were held back."""

    def __init__(self, every_s: float = REPEAT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: Counter[tuple[str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._held[key] += 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = (f"{record.msg} ({held:,} more like it held back in the last "
                          f"{self.every_s:.0f} s)")
        return True


def hold_back_repeats(prefix: str = NOISY_LOGGERS, every_s: float = REPEAT_EVERY_S) -> RepeatFilter:
    """Put one :class:`RepeatFilter` on every logger named ``prefix`` or ``prefix.*`` that
    exists now (they are made when their modules are imported: import the client first), and
    return it. A logger's filter sees only the records logged on it, not its children's, so
    each gets it."""
    repeat = RepeatFilter(every_s)
    names = [name for name in list(logging.root.manager.loggerDict)
             if name == prefix or name.startswith(prefix + ".")]
    for name in [prefix, *names]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(repeat)
    return repeat

"""Warm-up: how long an engine has observed the stream, and which figures that is enough for.

An engine that starts on an empty state (a cold start, a lost checkpoint, a new pseudonymization
key) sees only the devices that pinged since it started: for its first day it counts too few
active devices, and until it has seen a few nights, homes rest on too few nights. Its figures are
then *warming up*: published, but marked, and never used to open or close an alert.

- ``present`` (and the cells) is warm once the whole activity window (``activity_ms``, 24 h by
  default) has been observed: every device active at the instant has then been seen.
- ``resident`` (and the registry gap) is warm once, in addition, ``nights`` whole nights have
  been observed (a night counts when the observation began at or before its local start).
- Period tables (:class:`PeriodWarmUp`): migration flows of a period are warm when it begins
  once two whole majority windows of nights (``window_nights``) have been observed: a usual
  residence then rests on a whole window, and a move out of it has had a whole window to be
  detected (devices seen on fewer than all nights need both: with one window, 16-29 % of
  relocations were still missed in the next two weeks, none after the second). Confirmed moves
  and returns are known ``confirm_nights`` later. Arrivals of foreign SIMs are warm from the
  first night whose pings all came ``gap_ms`` (the silence that separates stays) after the
  observation start: a SIM first seen earlier may have been in the country all along.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from estimators.units import HOUR_MS

WARMUP_NIGHTS = 1
"""Whole nights observed before resident and gap figures are warm (see the module doc)."""
SAME_START_MS = 6 * HOUR_MS
"""Engines whose observations start within this of each other started together (one stream's
partitions); a later start is a part that started over (:func:`estimators.tally.merged_observation`)."""


@dataclass(frozen=True)
class WarmUp:
    """Warm-up state of the figures at ``at_ms`` (UTC ms).

    ``observed_from_ms``: start of the observation (the hour of the earliest accepted ping; None:
    nothing observed yet); ``present``/``resident``: whether those figures are still warming up;
    ``present_ready_ms``/``resident_ready_ms``: when they are (or were) warm (None: not known,
    nothing observed).
    """

    at_ms: int
    observed_from_ms: int | None
    present: bool
    resident: bool
    present_ready_ms: int | None
    resident_ready_ms: int | None

    @property
    def any(self) -> bool:
        """Whether any figure is still warming up."""
        return self.present or self.resident


def observation_start(first_ping_ms: int | None) -> int | None:
    """The start of an observation whose earliest accepted ping is ``first_ping_ms``: the start
    of its UTC hour (None stays None)."""
    return None if first_ping_ms is None else first_ping_ms // HOUR_MS * HOUR_MS


def warm_up(at_ms: int, first_ping_ms: int | None, activity_ms: int, nights: int,
            night_start_ms: Callable[[int], int], night_of_ms: Callable[[int], int],
            night_close_ms: Callable[[int], int]) -> WarmUp:
    """Warm-up state at ``at_ms`` of an observation whose earliest accepted ping is
    ``first_ping_ms`` (None: nothing observed: everything warming, ready times unknown).

    ``night_start_ms(n)``/``night_close_ms(n)``: UTC ms at which night ``n`` (days since 1970 of
    its local evening) begins and ends; ``night_of_ms(t)``: the night whose evening day holds
    ``t`` (the night that starts on ``t``'s local day). ``nights`` >= 0 (0: resident is warm
    with present).
    """
    start = observation_start(first_ping_ms)
    if start is None:
        return WarmUp(at_ms, None, True, True, None, None)
    present_ready = start + activity_ms
    resident_ready = present_ready
    if nights > 0:
        first = first_whole_night(start, night_start_ms, night_of_ms)
        resident_ready = max(present_ready, night_close_ms(first + nights - 1))
    return WarmUp(at_ms, start, at_ms < present_ready, at_ms < resident_ready, present_ready,
                  resident_ready)


def first_whole_night(start_ms: int, night_start_ms: Callable[[int], int],
                      night_of_ms: Callable[[int], int]) -> int:
    """The first night (days since 1970 of its local evening) an observation starting at
    ``start_ms`` saw whole: the night of its day, or the next when that one began before it."""
    first = night_of_ms(start_ms)
    return first + 1 if night_start_ms(first) < start_ms else first


@dataclass(frozen=True)
class PeriodWarmUp:
    """From which night the period tables are warm (see the module doc); None: nothing observed
    yet, every period warming.

    ``observed_from_ms``: the observation start; ``relocations_from_night``: the first night of
    a period whose relocations are warm; ``confirmed_from_night``: the same for confirmed moves
    and returns; ``arrivals_from_night``: the first night whose foreign-SIM arrivals are all
    arrivals; ``first_whole_night``: the first night observed whole (:func:`first_whole_night`).
    """

    observed_from_ms: int | None
    relocations_from_night: int | None
    confirmed_from_night: int | None
    arrivals_from_night: int | None
    first_whole_night: int | None = None

    def observed_from(self, evaluated_from: int) -> int:
        """The first night of a period's counts observed whole, for a period whose first
        evaluated night is ``evaluated_from``: a night that closed soon after the observation
        began is evaluated, but on the pings of its last hours only."""
        if self.first_whole_night is None:
            return evaluated_from
        return max(evaluated_from, self.first_whole_night)

    def warming(self, figure: str, first_night: int) -> bool:
        """Whether ``figure`` (``relocations``, ``confirmed`` or ``arrivals``) of a period
        beginning on ``first_night`` is still warming up."""
        ready = self.ready_night(figure)
        return ready is None or first_night < ready

    def ready_night(self, figure: str) -> int | None:
        """The first night of a period whose ``figure`` is warm (None: not known)."""
        return {"relocations": self.relocations_from_night,
                "confirmed": self.confirmed_from_night,
                "arrivals": self.arrivals_from_night}[figure]


def observed_whole_from(warm: PeriodWarmUp | None, evaluated_from: int, last_night: int) -> int:
    """The first night of a period (whose last night is ``last_night``) observed whole, for a
    period whose first evaluated night is ``evaluated_from`` (-1: none yet); -1 when none of its
    nights was (``warm`` None: the evaluated night is taken as whole)."""
    if evaluated_from < 0:
        return -1
    whole = evaluated_from if warm is None else warm.observed_from(evaluated_from)
    return whole if whole <= last_night else -1


def period_warm_up(first_ping_ms: int | None, window_nights: int, confirm_nights: int,
                   gap_ms: int, night_start_ms: Callable[[int], int],
                   night_of_ms: Callable[[int], int],
                   night_close_ms: Callable[[int], int]) -> PeriodWarmUp:
    """:class:`PeriodWarmUp` of an observation whose earliest accepted ping is ``first_ping_ms``
    (the night functions as in :func:`warm_up`): relocations from the night after two windows
    of ``window_nights`` whole nights, confirmed moves ``confirm_nights`` later, arrivals from
    the first night ``n`` whose previous night closed ``gap_ms`` or more after the start (a
    night's arrivals are the SIMs first seen since the previous close)."""
    start = observation_start(first_ping_ms)
    if start is None:
        return PeriodWarmUp(None, None, None, None)
    whole = first_whole_night(start, night_start_ms, night_of_ms)
    relocations = whole + 2 * window_nights
    arrivals = night_of_ms(start + gap_ms)
    while night_close_ms(arrivals - 1) < start + gap_ms:
        arrivals += 1
    while night_close_ms(arrivals - 2) >= start + gap_ms:
        arrivals -= 1
    return PeriodWarmUp(start, relocations, relocations + confirm_nights, arrivals, whole)

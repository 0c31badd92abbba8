"""How many jobs a worker holds beyond its slots, so that a freed slot finds its next job already there.

A slot that frees asks the server for a job (a Credit) and waits a dispatch round trip for it: the
server claims the job and sends it back. When handlers take far longer than that (a GPU job of seconds),
the wait does not matter, and a prefetched job would only sit behind a busy slot while another worker
is idle. When they take about as long or less (small, fast jobs), the slots spend most of their time
waiting, and holding a few jobs in hand is what keeps them busy: Little's law gives the number,
slots x round trip / handler time, at most MAX_PER_SLOT per slot.

`auto` measures the handler time (a moving average of the jobs that ended) and prefetches nothing until
the first job ended; a number fixes the prefetch (0: never).
"""

from __future__ import annotations

import math
from typing import Literal

#: A dispatch round trip under load, credit sent -> job received: 3.8 ms p50 and 5.2 ms p90 on the
#: benchmark's 2-core machine in a 20,000-job drain (bench/README.md). Rounded up: the estimate only
#: has to tell fast handlers from slow ones.
ROUND_TRIP_S = 0.005
#: The most jobs held per slot, as the server allows (its MAX_PREFETCH_PER_SLOT): three drained 20,000
#: no-op jobs at 7,756-8,389 jobs/s where one managed 6,282-6,600 (claims of about 31 jobs instead of 16).
MAX_PER_SLOT = 3
#: Weight of the newest job in the moving average of handler time.
_SMOOTHING = 0.2

PrefetchSetting = int | Literal["auto"]


def check_prefetch(value: PrefetchSetting, slots: int) -> None:
    """Raises ValueError unless `value` is "auto" or a whole number from 0 to MAX_PER_SLOT x `slots`."""
    if value == "auto":
        return
    most = MAX_PER_SLOT * slots
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ValueError(
            f"prefetch must be 'auto' or a whole number from 0 to {MAX_PER_SLOT} x concurrency ({most})"
        )


class Prefetch:
    """The prefetch of one worker, kept across its reconnections (the handler's speed does not change)."""

    def __init__(self, slots: int, setting: PrefetchSetting) -> None:
        check_prefetch(setting, slots)
        self._slots = slots
        self._fixed = None if setting == "auto" else setting
        self._mean_s: float | None = None

    @property
    def limit(self) -> int:
        """The most it may ever ask for (told to the server in Hello)."""
        return MAX_PER_SLOT * self._slots if self._fixed is None else self._fixed

    @property
    def wanted(self) -> int:
        """How many jobs to hold beyond the slots now."""
        if self._fixed is not None:
            return self._fixed
        if self._mean_s is None:
            return 0
        return min(
            MAX_PER_SLOT * self._slots, math.floor(self._slots * ROUND_TRIP_S / max(self._mean_s, 1e-6))
        )

    def observe(self, seconds: float) -> None:
        """A handler ran for `seconds`."""
        if self._mean_s is None:
            self._mean_s = seconds
        else:
            self._mean_s += _SMOOTHING * (seconds - self._mean_s)

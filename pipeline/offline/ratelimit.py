"""The request-rate window behind 429 ``rate_limit_exceeded`` (the ``rate_limit_per_minute`` knob).

A sliding 60-second log of the requests it let through: a request arriving while ``limit`` of them are less than
60 s old is refused, with ``Retry-After`` = the seconds until the oldest one leaves the window (rounded up, at least
1). Refused requests are not logged, so a client that keeps knocking is not locked out for longer. The window is
global (all keys share it), like the concurrency cap.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0


class RateWindow:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._admitted: deque[float] = deque()

    def admit(self, limit: int | None) -> int | None:
        """None if the request may go on (and it is logged), else the seconds to wait. ``limit`` None: no window."""
        if limit is None:
            return None
        now = self._clock()
        while self._admitted and now - self._admitted[0] >= WINDOW_S:
            self._admitted.popleft()
        if len(self._admitted) >= limit:
            return max(1, math.ceil(self._admitted[0] + WINDOW_S - now))
        self._admitted.append(now)
        return None

    def reset(self) -> None:
        self._admitted.clear()

"""Log lines that callers from the network can cause, written at a limited rate.

Anyone who can reach the HTTP port can send a webhook with a wrong
signature, a thousand times a second. Each call is counted in a metric;
the journal gets one line per `LogLimiter.every` seconds for each kind of
call, and that line says how many like it were held back since the last
one, so a flood stays visible without drowning everything else.

Time is the monotonic clock (a wall-clock jump neither floods nor mutes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

#: Seconds between two log lines of the same kind.
EVERY = 10.0
#: Kinds remembered at most; beyond that the memory starts afresh (a burst may then log a line more).
MAX_KINDS = 1024


class LogLimiter:
    """Decides per key whether a line may be written now; see the module docstring."""

    def __init__(self, every: float = EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self._clock = every, clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    @property
    def remembered(self) -> int:
        """Kinds of line this limiter keeps a time for (at most `MAX_KINDS`)."""
        return len(self._last)

    def allow(self, key: Hashable) -> int | None:
        """None: hold this line back. Otherwise write it now: the number is how many were held back."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if last is None and len(self._last) >= MAX_KINDS:
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)

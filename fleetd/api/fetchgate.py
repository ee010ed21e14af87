"""Webhook pushes to fetches: the first push fetches at once, then at most one more per `SPACING` seconds.

A push notification says "the repository changed"; any fetch that starts
after it answers it. A burst of pushes — a replayed webhook, a busy
monorepo, a sender retrying — must not become a fetch per call: the git
server would see one for each, and so would the journal. So the HTTP
server hands every valid push to a `FetchGate` instead of fetching:

* a push when no webhook fetch was asked for in the last `SPACING`
  seconds asks for one now;
* a push inside that window queues exactly one more, asked for when the
  window ends (pushes while it is queued add nothing).

So a burst shorter than `SPACING` costs at most two fetches, a longer one
one per `SPACING`, and the last push of any burst is always followed by a
fetch. The source loop coalesces on top of this (one fetch in flight, one
queued), and operators' ``fleetd reconcile`` does not pass through here.
Time is the event loop's (monotonic) clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Seconds between two fetches asked for by webhooks.
SPACING = 5.0


class FetchGate:
    """See the module docstring. Call `close` when the server stops (drops a queued fetch)."""

    def __init__(self, fetch: Callable[[], None], spacing: float = SPACING) -> None:
        self._fetch, self.spacing = fetch, spacing
        self._last: float | None = None  # loop time of the last fetch asked for
        self._queued: asyncio.TimerHandle | None = None
        self.asked = 0
        """Fetches asked for so far."""

    def push(self) -> None:
        """A valid push arrived."""
        if self._queued is not None:
            return
        loop = asyncio.get_running_loop()
        wait = 0.0 if self._last is None else self._last + self.spacing - loop.time()
        if wait <= 0:
            self._ask()
        else:
            self._queued = loop.call_later(wait, self._ask)

    def _ask(self) -> None:
        self._queued = None
        self._last = asyncio.get_running_loop().time()
        self.asked += 1
        self._fetch()

    def close(self) -> None:
        if self._queued is not None:
            self._queued.cancel()
            self._queued = None

"""Keeping large, long-lived data out of the cyclic garbage collector's way.

A render of a large repository creates millions of dicts and lists that live
as long as the render is cached and applied. CPython's cyclic collector
rescans every tracked object in each full (generation 2) collection while
holding the interpreter: with a 50 MB manifest's five million objects that
is over a second in which the event loop stands still — in the middle of the
render, and again at every later full collection for as long as the objects
live.

`settle` collects the young generations (cheap: they are small), then moves
every object that exists now into the permanent generation (``gc.freeze``),
where full collections no longer visit it. Frozen objects are still freed by
reference counting when their last reference goes, so acyclic data (parsed
manifests, rendered objects) costs nothing more; only a reference cycle
that was alive when it was frozen and dies later is never collected.
`Settler` settles after every `SETTLE_EVERY` objects made, so a render tells
it about every document without cost.
"""

from __future__ import annotations

import gc
import threading

SETTLE_EVERY = 100_000
"""Objects made (roughly) between two `settle` calls of a `Settler`."""
BYTES_PER_OBJECT = 10
"""Parsed YAML makes about one object per this many bytes of input."""

_lock = threading.Lock()


def settle() -> None:
    """Collect young garbage, then freeze everything alive into the permanent generation."""
    with _lock:
        gc.collect(1)
        gc.freeze()


class Settler:
    """Calls `settle` once enough objects were made since the last call (one per render)."""

    __slots__ = ("_every", "_pending")

    def __init__(self, every: int = SETTLE_EVERY) -> None:
        self._every = every
        self._pending = 0

    def parsed(self, size: int) -> None:
        """Record that `size` bytes of input were parsed."""
        self.made(size // BYTES_PER_OBJECT)

    def made(self, count: int) -> None:
        """Record `count` more objects made; settle when the total reaches the threshold."""
        self._pending += count
        if self._pending >= self._every:
            self._pending = 0
            settle()

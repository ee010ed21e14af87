"""Live reload of the inventory: notice edits, load them off the loop, keep the last good inventory.

The inventory files are polled (`POLL` seconds; path, mtime and size) and
reloaded on SIGHUP or ``fleetd reload``. An edit that does not load keeps
the inventory in force and says why (the fleet state records an
``inventory.rejected`` event); the daemon applies a valid one by swapping
the whole frozen `Fleet` (see `fleetd.daemon.root`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from fleetd.daemon.events import Event, EventKind
from fleetd.daemon.state import FleetState
from fleetd.errors import InventoryError
from fleetd.inventory import Fleet, load_fleet

log = logging.getLogger(__name__)

#: How often the inventory files are checked for changes (seconds).
POLL = 2.0


def inventory_stamp(fleet: Fleet) -> tuple[tuple[str, int, int], ...]:
    """What the inventory files look like on disk (path, mtime, size): a change means reload."""
    files = [fleet.file, *fleet.clusters_dir.glob("*.toml")]
    stamp = []
    for path in sorted(set(files)):
        with contextlib.suppress(OSError):
            st = path.stat()
            stamp.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(stamp)


class Reloader:
    """Watches the inventory and hands every valid new one to ``apply``."""

    def __init__(
        self,
        state: FleetState,
        apply: Callable[[Fleet, Fleet], Awaitable[str]],
        *,
        around: Callable[[bool], None] = lambda starting: None,
    ) -> None:
        self._state, self._apply, self._around = state, apply, around
        self._now = asyncio.Event()
        self._stamp = inventory_stamp(state.fleet)
        #: Set after every reload attempt (tests and systemd notifications wait on it).
        self.reloaded = asyncio.Event()

    @property
    def error(self) -> str | None:
        """Why the last reload was rejected (None when it was not)."""
        return self._state.inventory_error

    def request(self) -> None:
        self._now.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):
                    await self._now.wait()
            if self._now.is_set() or inventory_stamp(self._state.fleet) != self._stamp:
                self._now.clear()
                await self.reload()

    async def reload(self) -> bool:
        """Swap in the inventory on disk; keep the current one (and say why) if it is invalid.

        ``around(True)`` is called before and ``around(False)`` after (systemd's RELOADING/READY).
        """
        self._around(True)
        try:
            return await self._reload()
        finally:
            self._around(False)

    async def _reload(self) -> bool:
        self._stamp = inventory_stamp(self._state.fleet)
        try:
            new = await asyncio.to_thread(load_fleet, self._state.fleet.file)
        except InventoryError as exc:
            log.error("inventory not reloaded, keeping the last good one:\n%s", exc)  # noqa: TRY400
            self._state.inventory(None, str(exc))
            self.reloaded.set()
            return False
        old = self._state.fleet
        self._state.inventory(new, None)
        summary = await self._apply(old, new)
        self._state.emit(Event(kind=EventKind.INVENTORY_RELOADED, message=summary))
        self._stamp = inventory_stamp(new)
        self.reloaded.set()
        return True

"""Clusters leaving the inventory under ``prune_removed_clusters``: wait out a grace period, then prune.

Removing a cluster file is the one inventory edit that deletes everything
fleetd applied to a cluster, and file systems make it happen by accident:
an editor's save-by-rename, a symlink flapping, a half-finished checkout.
So a departure is only *scheduled*: its objects are pruned once the file
has stayed away for ``prune_grace`` (monotonic time), and a file that comes
back cancels the wait. Each step is an event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fleetd.daemon.events import Event, EventKind, Severity
from fleetd.daemon.state import FleetState
from fleetd.errors import FleetdError
from fleetd.inventory import Cluster

log = logging.getLogger(__name__)

#: Prunes one departed cluster: (fleet name, cluster) -> the syncs pruned.
Pruner = Callable[[str, Cluster], Awaitable[list[str]]]
#: Seconds between checks of the pending departures.
CHECK_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class _Pending:
    fleet: str
    cluster: Cluster
    due: float


class Departures:
    """The clusters waiting out their grace period; see the module docstring."""

    def __init__(self, state: FleetState, prune: Pruner) -> None:
        self._state, self._prune = state, prune
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()

    @property
    def pending(self) -> list[str]:
        return sorted(self._pending)

    def leave(self, fleet: str, cluster: Cluster, grace: float) -> None:
        """``cluster`` left the inventory: prune it after ``grace`` seconds unless it comes back."""
        self._pending[cluster.name] = _Pending(fleet, cluster, time.monotonic() + grace)
        self._state.emit(Event(
            kind=EventKind.OPERATOR_ACTION, severity=Severity.WARNING, cluster=cluster.name,
            message=f"cluster file removed: its objects are pruned in {grace:g}s unless the file comes back",
        ))  # fmt: skip
        self._wake.set()

    def returned(self, name: str) -> None:
        """The cluster is in the inventory again: cancel its prune."""
        if self._pending.pop(name, None) is not None:
            self._state.emit(Event(kind=EventKind.OPERATOR_ACTION, cluster=name,
                                   message="cluster file is back: its prune is cancelled"))  # fmt: skip

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for name, pending in sorted(self._pending.items()):
                if pending.due <= now:
                    del self._pending[name]
                    await self._depart(pending)
            delay = min((p.due - time.monotonic() for p in self._pending.values()), default=3600.0)
            self._wake.clear()
            try:
                async with asyncio.timeout(max(CHECK_EVERY, delay)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _depart(self, pending: _Pending) -> None:
        cluster = pending.cluster
        try:
            async with asyncio.timeout(max((s.timeout for s in cluster.syncs), default=60)):
                syncs = await self._prune(pending.fleet, cluster)
        except (FleetdError, TimeoutError) as exc:
            log.error("cluster %s left the inventory but could not be pruned: %s", cluster.name, exc)  # noqa: TRY400
            message = f"left the inventory but could not be pruned: {exc}"
            failed = Event(
                kind=EventKind.RECONCILE_FAILED,
                severity=Severity.ERROR,
                cluster=cluster.name,
                message=message,
            )
            self._state.emit(failed)
            return
        log.info("cluster %s left the inventory: pruned syncs %s", cluster.name, ", ".join(syncs) or "none")
        message = f"left the inventory: pruned syncs {', '.join(syncs) or 'none'}"
        self._state.emit(Event(kind=EventKind.OBJECTS_PRUNED, cluster=cluster.name, message=message))

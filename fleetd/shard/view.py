"""What this replica has seen of the fleet's Leases, and since when — judged by its own clock only.

Replicas never compare their clocks. Like client-go's leader election, a
replica remembers, for every Lease, *when it first saw its current
version* (monotonic time, `Seen.since`). A membership Lease whose version
has not changed for a whole lease duration of that local time belongs to a
replica that stopped renewing at least that long ago, whatever the clocks
say; wall times in the Lease are for people only.

The view is fed by a list-then-watch of the fleet's Leases (`on_list`,
`on_event`) and by this replica's own writes (`observe`). Versions only move
forward: an event older than what a write already showed is ignored.

Holder liveness (`holder_gone`): the holder of a cluster Lease owns the
cluster for as long as its membership lives. It is gone when its
membership Lease

* is held by another incarnation (that one took it only after waiting out
  this one), or
* has not changed (or has been absent) for a whole lease duration.

A Lease this replica never saw counts as absent since the view started, so a
freshly started replica waits a whole lease duration before it declares
anyone gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fleetd.shard.leases import Kind, Lease, lease_name, replica_of


@dataclass(frozen=True, slots=True)
class Seen:
    """A Lease as last seen (None: absent) and the monotonic time that state was first seen."""

    lease: Lease | None
    since: float


class LeaseView:
    """The fleet's Leases as this replica saw them; see the module docstring."""

    def __init__(
        self,
        fleet: str,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet, self._on_change, self._clock = fleet, on_change, clock
        self.started = clock()
        self._leases: dict[str, Seen] = {}
        self._absent: dict[str, float] = {}  # deleted Leases -> when their absence was first seen

    # -- feeding ------------------------------------------------------------------

    def observe(self, lease: Lease) -> None:
        """Record ``lease`` as read or written now (older versions than the one seen are ignored)."""
        current = self._leases.get(lease.name)
        if (
            current is not None
            and current.lease is not None
            and not _newer(lease.version, current.lease.version)
        ):
            return
        self._leases[lease.name] = Seen(lease, self._clock())
        self._absent.pop(lease.name, None)
        self._on_change()

    def absent(self, name: str) -> None:
        """Record that the Lease ``name`` does not exist (deleted, or a GET found nothing)."""
        if name in self._leases or name not in self._absent:
            self._leases.pop(name, None)
            self._absent[name] = self._clock()
            self._on_change()

    def refresh(self, kind: Kind, subject: str, lease: Lease | None) -> None:
        """Record a fresh read of one Lease (None: it does not exist)."""
        if lease is None:
            self.absent(lease_name(self.fleet, kind, subject))
        else:
            self.observe(lease)

    async def on_list(self, objects: list[dict[str, Any]]) -> None:
        """A full list of Lease objects (from the watch)."""
        self.relisted([lease for lease in (Lease.parse(self.fleet, o) for o in objects) if lease is not None])

    def relisted(self, listed: list[Lease]) -> None:
        """A full list: every Lease in it observed, every other Lease seen so far now absent."""
        for lease in listed:
            self.observe(lease)
        for name in set(self._leases) - {lease.name for lease in listed}:
            self.absent(name)

    async def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        lease = Lease.parse(self.fleet, obj)
        if lease is None:
            return
        if kind == "DELETED":
            self.absent(lease.name)
        else:
            self.observe(lease)

    # -- reading -------------------------------------------------------------------

    def seen(self, kind: Kind, subject: str) -> Seen:
        name = lease_name(self.fleet, kind, subject)
        found = self._leases.get(name)
        return found if found is not None else Seen(None, self._absent.get(name, self.started))

    def leases(self, kind: Kind) -> list[Seen]:
        return [s for s in self._leases.values() if s.lease is not None and s.lease.kind == kind]

    def live_replicas(self, duration: float) -> set[str]:
        """Replicas whose membership Lease is held and changed less than ``duration`` seconds ago."""
        now = self._clock()
        return {
            s.lease.subject
            for s in self.leases("replica")
            if s.lease is not None and s.lease.holder and now - s.since < duration
        }

    def holder_gone(self, holder: str, duration: float) -> bool:
        """Whether the process ``holder`` can no longer be writing (see the module docstring)."""
        member = self.seen("replica", replica_of(holder))
        if member.lease is not None and member.lease.holder and member.lease.holder != holder:
            return True
        return self._clock() - member.since >= duration

    def expiries(self, duration: float) -> list[float]:
        """Monotonic times at which each live replica counts as gone if it renews no more."""
        now = self._clock()
        return [
            s.since + duration
            for s in self.leases("replica")
            if s.lease is not None and s.lease.holder and now - s.since < duration
        ]

    def gone_at(self, holder: str, duration: float) -> float:
        """Monotonic time at which `holder_gone` turns true if nothing changes."""
        return self.seen("replica", replica_of(holder)).since + duration

    def holders(self) -> dict[str, str]:
        """Cluster -> the replica holding its Lease (released Leases left out)."""
        return {
            s.lease.subject: s.lease.replica for s in self.leases("cluster") if s.lease and s.lease.holder
        }

    def ages(self, kind: Kind) -> Iterable[tuple[Lease, float]]:
        """Each Lease of ``kind`` and seconds since its current version was first seen."""
        now = self._clock()
        return [(s.lease, now - s.since) for s in self.leases(kind) if s.lease is not None]


def _newer(version: str, than: str) -> bool:
    """Whether ``version`` is after ``than`` (etcd revisions are integers; otherwise: different)."""
    try:
        return int(version) > int(than)
    except ValueError:
        return version != than

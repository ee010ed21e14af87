"""The write guard: the one check every write to a cluster passes first.

A `Guard` is a plain callable that returns when this fleetd may write to the
cluster now and raises `Fenced` when it may not. One hub alone always may
(`unguarded`). When several replicas share the fleet (`fleetd.shard`), the
guard answers from the replica's own clock whether it still holds the
cluster's Lease, with a margin before anyone else could take it over; it
does no I/O, so it can be asked right before every write.

The reconciler hands its guard to everything that writes to the spoke: the
applier (before every batch and every single write), the ledger store, the
drift correction (through the applier) and prune (before every delete).
Reads and dry runs are never guarded.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetd.errors import FleetdError

#: Returns when writing to the cluster is allowed now; raises `Fenced` otherwise.
Guard = Callable[[], None]


class Fenced(FleetdError):
    """This fleetd may not write to the cluster now: it does not hold (or cannot renew) its Lease."""

    temporary = True


def unguarded() -> None:
    """The guard of a hub that runs alone: writing is always allowed."""

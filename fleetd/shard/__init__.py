"""Several fleetd replicas share one fleet through Kubernetes Leases in a management cluster.

Configured by ``[fleet.sharding]`` (`fleetd.inventory.Sharding`); without it
this package is never used and one hub serves every cluster.

Inside, in the order the daemon meets them: `leases` (the Lease objects and
their conditional reads and writes), `view` (what this replica saw of them,
and since when, by its own clock), `membership` (this replica's own Lease:
join, renew, until when writing is safe), `assign` (rendezvous hashing and
pins), `coordinator` (acquire, release, hand-off, and the guard on every
write) and `ownership` (a one-shot read of who owns what, for
``fleetd status``). docs/sharding.md explains the design and its numbers.
"""

from __future__ import annotations

from fleetd.shard.coordinator import Coordinator, ShardRecorder

__all__ = ["Coordinator", "ShardRecorder"]

"""Who owns what, read once from the management cluster — for ``fleetd status``, without a daemon.

One list of the fleet's Leases gives every cluster's holder and every
replica that has a membership Lease. Whether a replica is live is judged
here by wall clocks (the Lease's ``renewTime`` against this machine's
clock), which is good enough to show people; the replicas themselves never
decide anything that way (`fleetd.shard.view`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from fleetd.inventory import Sharding
from fleetd.kube.client import KubeError, connect
from fleetd.shard.leases import LeaseApi


@dataclass(frozen=True, slots=True)
class Replica:
    """A replica with a membership Lease, as its Lease says."""

    name: str
    live: bool
    renewed_ago: float | None
    """Seconds since its last renewal by this machine's clock (None: never renewed)."""


@dataclass(frozen=True, slots=True)
class Ownership:
    holders: dict[str, str] = field(default_factory=dict)
    """Cluster -> the replica holding its Lease."""
    replicas: list[Replica] = field(default_factory=list)
    error: str | None = None
    """Why the management cluster could not be read (then nothing else is known)."""


async def read_ownership(sharding: Sharding, fleet: str) -> Ownership:
    """One list of the fleet's Leases; an unreachable management cluster is an `Ownership.error`."""
    try:
        async with await connect("management", sharding.kubeconfig, sharding.context) as client:
            leases = await LeaseApi(client, fleet=fleet, namespace=sharding.namespace).list()
    except KubeError as exc:
        return Ownership(error=str(exc))
    now = dt.datetime.now(dt.UTC)
    replicas = []
    for lease in (lease for lease in leases if lease.kind == "replica"):
        renewed = _parse(lease.renewed)
        ago = (now - renewed).total_seconds() if renewed is not None else None
        live = bool(lease.holder) and ago is not None and ago < sharding.lease_duration
        replicas.append(Replica(name=lease.subject, live=live, renewed_ago=ago))
    holders = {lease.subject: lease.replica for lease in leases if lease.kind == "cluster" and lease.holder}
    return Ownership(holders=holders, replicas=sorted(replicas, key=lambda r: r.name))


def _parse(micro: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(micro) if micro else None
    except ValueError:
        return None

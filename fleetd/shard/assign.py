"""Which live replica should own which cluster: rendezvous (highest-random-weight) hashing, with pins.

Every replica computes the same answer from the same inputs — the cluster
names, their pins and the set of live replicas — without talking to the
others. Each (cluster, replica) pair gets a pseudo-random weight from a
stable hash; a cluster goes to the live replica of highest weight. When a
replica joins, only the clusters for which it now has the highest weight
move (to it: about 1/n of them); when one leaves, only its own clusters
move, spread over the rest. Nothing else is reshuffled.

**Pins.** A cluster label (``pin_label``, default ``fleetd.dev/replicas``)
may name the replicas allowed to own the cluster, joined by ``_`` (label
values allow no commas; identities are DNS labels, so they hold no ``_``):
``fleetd.dev/replicas = "hub-eu-1_hub-eu-2"``. Rendezvous then picks among
those that are live; if none is, the cluster has no owner and says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping

from fleetd.inventory import Cluster

PIN_SEPARATOR = "_"


def weight(cluster: str, replica: str) -> int:
    """The stable pseudo-random weight of ``replica`` for ``cluster`` (same on every machine)."""
    digest = hashlib.blake2b(f"{cluster}\0{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pins(cluster: Cluster, pin_label: str) -> frozenset[str] | None:
    """The replicas ``cluster`` is pinned to, or None when any replica may own it."""
    value = cluster.labels.get(pin_label)
    if not value:
        return None
    return frozenset(p for p in value.split(PIN_SEPARATOR) if p)


def owner(cluster: str, replicas: Collection[str], allowed: frozenset[str] | None = None) -> str | None:
    """The replica that should own ``cluster``, or None when no eligible replica is live."""
    eligible = [r for r in replicas if allowed is None or r in allowed]
    return max(eligible, key=lambda r: (weight(cluster, r), r), default=None)


def assign(clusters: Mapping[str, frozenset[str] | None], replicas: Collection[str]) -> dict[str, str | None]:
    """Cluster -> owner for every cluster (``clusters`` maps each name to its pins)."""
    return {name: owner(name, replicas, allowed) for name, allowed in clusters.items()}

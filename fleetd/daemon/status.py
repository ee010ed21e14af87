"""The one shape of a sync's status, for the status API, the control socket and ``fleetd status``.

Rows come from the inventory (every cluster and sync that *should* exist)
joined with the statuses, so a sync that never ran shows up as ``pending``
instead of being silently absent. `status_document` reads a live
`FleetState`; `status_rows` reads the state directory, so ``fleetd status``
works without a running daemon.

When replicas share the fleet, the document also has a ``sharding``
section — this replica, the clusters it owns, every replica it sees (live
or gone) and which replica holds each cluster — and every cluster names its
``owner``. Only the owner's sync statuses are current; another replica's
rows for the cluster are what it saw when it last served it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleetd.daemon.state import FleetState, ShardState
from fleetd.daemon.store import StateStore, SyncStatus
from fleetd.inventory import Fleet
from fleetd.source import Snapshot, redact


def sync_fields(status: SyncStatus | None) -> dict[str, Any]:
    """What a sync's last status says, for tables and JSON (``pending`` when it never ran)."""
    return {
        "revision": status.revision if status else None,
        "result": str(status.result) if status else "pending",
        "objects": status.objects if status else 0,
        "changed": status.changed if status else 0,
        "pruned": status.pruned if status else 0,
        "error": status.error if status else None,
        "attempted_at": status.attempted_at if status else None,
        "succeeded_at": status.succeeded_at if status else None,
        "written": list(status.written) if status else [],
    }


def status_rows(fleet: Fleet, state: StateStore) -> list[dict[str, Any]]:
    """One row per (cluster, sync) of the inventory, with its last known status."""
    known = {(s.cluster, s.sync): s for s in state.statuses()}
    return [
        {"cluster": c.name, "wave": c.wave, "sync": s.name, **sync_fields(known.get((c.name, s.name)))}
        for c in fleet.clusters
        for s in c.syncs
    ]


def status_document(state: FleetState, snapshot_for: Callable[[str], Snapshot | None]) -> dict[str, Any]:
    """The whole fleet as JSON, nothing secret in it (the status API and ``fleetd`` over the socket)."""
    fleet, source = state.fleet, state.source
    document = {
        "fleet": fleet.name,
        "source": {
            "url": redact(fleet.source.url),
            "ref": f"{fleet.source.ref.kind} {fleet.source.ref.value}",
            "revision": source.revision,
            "last_error": source.last_error,
            "last_fetch": source.last_fetch,
        },
        "state": {"recording": state.recording_error is None, "error": state.recording_error},
        "inventory": {"error": state.inventory_error, "warnings": [str(w) for w in fleet.warnings]},
        "rollout": state.position().to_json(),
        "clusters": [_cluster(state, c.name, snapshot_for) for c in fleet.clusters],
    }
    if state.shard is not None:
        document["sharding"] = sharding_section(state.shard)
    return document


def sharding_section(shard: ShardState) -> dict[str, Any]:
    """This replica's part in the sharded fleet and what it sees of the others."""
    return {
        "replica": shard.identity,
        "member": shard.member,
        "error": shard.error,
        "owned": sorted(shard.owned),
        "replicas": [
            {
                "name": r,
                "live": r in shard.live,
                "clusters": sorted(c for c, h in shard.holders.items() if h == r),
            }
            for r in sorted(shard.live | shard.gone | set(shard.holders.values()))
        ],
        "clusters": {
            c: {"holder": shard.holders.get(c), "assigned": shard.assigned.get(c)}
            for c in sorted(set(shard.assigned) | set(shard.holders))
        },
    }


def _cluster(state: FleetState, name: str, snapshot_for: Callable[[str], Snapshot | None]) -> dict[str, Any]:
    cluster, health = state.fleet.cluster(name), state.cluster(name)
    held = state.suspended(name)
    syncs = [
        {
            "name": s.name,
            **sync_fields(state.status(name, s.name)),
            "drifted": state.drifted_count(name, s.name),
            "drifted_objects": [
                {"object": ref, "reason": reason}
                for ref, reason in sorted(state.drifted.get((name, s.name), {}).items())
            ],
            "suspended": cluster.suspend or s.suspend or bool({"", s.name} & held),
            "warnings": list(state.warnings.get((name, s.name), ())),
        }
        for s in cluster.syncs
    ]
    snapshot = snapshot_for(name)
    row = {
        "name": name, "wave": cluster.wave, "revision": snapshot.revision if snapshot else None,
        "reachable": health.reachable, "last_error": health.last_error, "syncs": syncs,
    }  # fmt: skip
    if state.shard is not None:
        row["owner"] = state.owner_of(name)
    return row

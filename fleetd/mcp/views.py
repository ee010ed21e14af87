"""The answers of the read-only MCP tools, built from the status document, the inventory and the journal.

Pure functions of JSON-able inputs, so each shape is tested without a
daemon. Everything here comes from the daemon's status document, the
inventory, the event journal and the ledgers, none of which holds a secret
value (`fleetd.daemon.events`, `fleetd.daemon.store`); `guard` masks any
Secret that reaches an answer anyway, as a last line of defence.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any

from fleetd.daemon.events import Event
from fleetd.inventory import Cluster, Fleet, Sync
from fleetd.mcp.access import ToolFailure
from fleetd.reconcile.diff import MASK, DiffReport
from fleetd.reconcile.ledger import Ledger


def iso(seconds: float | None) -> str | None:
    return None if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0] if text and text.strip() else None


def cluster_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    for cluster in doc.get("clusters", []):
        if cluster["name"] == name:
            return dict(cluster)
    known = ", ".join(c["name"] for c in doc.get("clusters", [])) or "none"
    raise ToolFailure(f"no cluster {name!r} in the fleet (clusters: {known}); call fleet_status to list them")


def sync_of(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    for sync in cluster.get("syncs", []):
        if sync["name"] == name:
            return dict(sync)
    known = ", ".join(s["name"] for s in cluster.get("syncs", [])) or "none"
    raise ToolFailure(f"cluster {cluster['name']} has no sync {name!r} (its syncs: {known})")


def inventory_cluster(fleet: Fleet, name: str) -> Cluster:
    try:
        return fleet.cluster(name)
    except KeyError:
        raise ToolFailure(f"no cluster {name!r} in the inventory {fleet.file}") from None


def inventory_sync(cluster: Cluster, name: str) -> Sync:
    try:
        return cluster.sync(name)
    except KeyError:
        raise ToolFailure(f"cluster {cluster.name} has no sync {name!r} in the inventory") from None


def event_json(event: Event) -> dict[str, Any]:
    return event.to_json() | {"time": iso(event.time)}


def _times(sync: dict[str, Any]) -> dict[str, Any]:
    return sync | {
        "attempted_at": iso(sync.get("attempted_at")),
        "succeeded_at": iso(sync.get("succeeded_at")),
    }


def overview(doc: dict[str, Any]) -> dict[str, Any]:
    """The whole fleet in one answer, with what needs attention first."""
    attention: list[str] = []
    results: Counter[str] = Counter()
    clusters = []
    for cluster in doc.get("clusters", []):
        counts = Counter(s["result"] for s in cluster["syncs"])
        results.update(counts)
        if cluster.get("reachable") is False:
            attention.append(
                f"cluster {cluster['name']} unreachable: {first_line(cluster.get('last_error'))}"
            )
        for sync in cluster["syncs"]:
            where = f"{cluster['name']}/{sync['name']}"
            if sync["result"] not in ("ready", "pending"):
                attention.append(f"{where} {sync['result']}: {first_line(sync.get('error')) or 'no detail'}")
            if sync.get("drifted"):
                attention.append(f"{where}: {sync['drifted']} object(s) drifted from git")
        clusters.append(
            {
                "name": cluster["name"],
                "wave": cluster.get("wave"),
                "revision": cluster.get("revision"),
                "reachable": cluster.get("reachable"),
                "syncs": dict(counts),
                "drifted": sum(s.get("drifted") or 0 for s in cluster["syncs"]),
            }
        )
    return {
        "fleet": doc.get("fleet"),
        "live": doc.get("live", True),
        "daemon": doc.get("daemon"),
        "source": doc.get("source"),
        "rollout": doc.get("rollout"),
        "inventory": doc.get("inventory"),
        "state": doc.get("state"),
        "sync_results": dict(results),
        "attention": attention,
        "clusters": clusters,
    }


def cluster_view(doc: dict[str, Any], fleet: Fleet, name: str) -> dict[str, Any]:
    cluster = cluster_of(doc, name)
    declared = inventory_cluster(fleet, name)
    return cluster | {
        "labels": dict(declared.labels),
        "suspended_in_inventory": declared.suspend,
        "syncs": [_times(s) for s in cluster["syncs"]],
        "live": doc.get("live", True),
    }


def sync_view(
    doc: dict[str, Any],
    fleet: Fleet,
    cluster: str,
    sync: str,
    *,
    ledger: Ledger | None,
    events: list[Event],
    health: dict[str, dict[str, str]] | None,
    health_note: str | None,
) -> dict[str, Any]:
    """One sync: settings, last result and error, drift, managed objects with health, recent events."""
    status = sync_of(cluster_of(doc, cluster), sync)
    declared = inventory_sync(inventory_cluster(fleet, cluster), sync)
    objects = []
    for entry in sorted(ledger.entries if ledger else ()):
        item: dict[str, Any] = {"object": str(entry.ref), "api_version": entry.api_version}
        if health is not None:
            item["health"] = health.get(str(entry.ref), {"status": "unknown", "message": "not read"})
        objects.append(item)
    return {
        "cluster": cluster,
        "sync": sync,
        "live": doc.get("live", True),
        "settings": settings(declared),
        "status": {k: v for k, v in _times(status).items() if k not in ("name", "drifted_objects")},
        "drift": {
            "policy": str(declared.drift),
            "count": status.get("drifted"),
            "objects": status.get("drifted_objects"),
        },
        "objects": objects,
        "objects_note": None if ledger else "no ledger recorded yet: the sync never applied here",
        "health_note": health_note,
        "recent_events": [event_json(e) for e in events],
    }


def settings(sync: Sync) -> dict[str, Any]:
    return {
        "path": str(sync.path),
        "prune": sync.prune,
        "wait": sync.wait,
        "interval_seconds": sync.interval,
        "timeout_seconds": sync.timeout,
        "drift": str(sync.drift),
        "namespace": sync.namespace,
        "suspend": sync.suspend,
        "force": sync.force,
        "depends_on": list(sync.depends_on),
        "health_checks": list(sync.health_checks),
        "fleet_wide": sync.fleet_wide,
    }


def rollout_view(
    doc: dict[str, Any], fleet: Fleet, revisions: list[Event], rollout: list[Event]
) -> dict[str, Any]:
    """Which revision each wave applies, which cluster is where, and the revisions seen lately."""
    position = doc.get("rollout") or {}
    allowed = position.get("waves") or {}
    waves = []
    for number, members in enumerate(fleet.waves()):
        wave = members[0].wave if members else number
        clusters = []
        for member in members:
            found = cluster_of(doc, member.name)
            clusters.append(
                {
                    "name": member.name,
                    "syncs": {
                        s["name"]: {"revision": s.get("revision"), "result": s["result"]}
                        for s in found["syncs"]
                    },
                }
            )
        target = position.get("target")
        waves.append(
            {
                "wave": wave,
                "applies": allowed.get(str(wave)),
                "has_target": target is not None and allowed.get(str(wave)) == target,
                "clusters": clusters,
            }
        )
    return {
        "source": doc.get("source"),
        "target": position.get("target"),
        "reached_wave": position.get("reached_wave"),
        "halted_at_wave": position.get("halted_at_wave"),
        "held": position.get("held"),
        "waves": waves,
        "recent_revisions": [
            {"revision": e.revision, "time": iso(e.time), "message": e.message} for e in reversed(revisions)
        ],
        "rollout_events": [event_json(e) for e in reversed(rollout)],
        "live": doc.get("live", True),
    }


def diff_json(report: DiffReport) -> dict[str, Any]:
    """A diff for an agent: per sync its objects (action, identity, origin, diff, notes) and errors."""
    syncs = [
        {
            "name": s.name, "note": s.note, "errors": list(s.errors),
            "objects": [
                {"action": o.action, "kind": o.ref.kind, "group": o.ref.group, "namespace": o.ref.namespace,
                 "name": o.ref.name, "origin": o.origin, "diff": o.diff, "notes": list(o.notes)}
                for o in s.objects
            ],
        }
        for s in report.syncs
    ]  # fmt: skip
    return {
        "cluster": report.cluster, "revision": report.revision, "ref": report.ref,
        "changes": report.has_changes, "errors": report.errors, "syncs": syncs,
        "summary": {a: report.count(a) for a in ("created", "changed", "pruned")},
    }  # fmt: skip


def guard(answer: dict[str, Any]) -> dict[str, Any]:
    """`answer` with the data of any Secret manifest in it masked (defence in depth)."""
    guarded: dict[str, Any] = _guard(answer)
    return guarded


def _guard(value: Any) -> Any:
    if isinstance(value, list):
        return [_guard(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _guard(v) for k, v in value.items()}
    if out.get("kind") == "Secret" and ("data" in out or "stringData" in out):
        out = copy.deepcopy(out)
        for key in ("data", "stringData"):
            if isinstance(out.get(key), dict):
                out[key] = dict.fromkeys(out[key], MASK)
    return out

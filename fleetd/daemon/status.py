"""``fleetd status``: what the last reconcile of every sync did, from the state directory.

Rows come from the inventory (every cluster and sync that *should* exist)
joined with the persisted statuses, so a sync that never ran shows up as
``pending`` instead of being silently absent.
"""

from __future__ import annotations

import time
from typing import Any

from fleetd.daemon.store import StateStore, SyncStatus
from fleetd.inventory import Fleet
from fleetd.util.durations import format_duration


def sync_fields(status: SyncStatus | None) -> dict[str, Any]:
    """What a sync's last status says, for tables and JSON (``pending`` when it never ran)."""
    return {
        "revision": status.revision if status else None,
        "result": status.result if status else "pending",
        "objects": status.objects if status else 0,
        "changed": status.changed if status else 0,
        "pruned": status.pruned if status else 0,
        "error": status.error if status else None,
        "attempted_at": status.attempted_at if status else None,
        "succeeded_at": status.succeeded_at if status else None,
    }


def status_rows(fleet: Fleet, state: StateStore) -> list[dict[str, Any]]:
    """One row per (cluster, sync) of the inventory, with its last known status."""
    known = {(s.cluster, s.sync): s for s in state.statuses()}
    return [
        {"cluster": c.name, "wave": c.wave, "sync": s.name, **sync_fields(known.get((c.name, s.name)))}
        for c in fleet.clusters
        for s in c.syncs
    ]


def _age(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return format_duration(max(0.0, round(time.time() - timestamp)))


def render_status(rows: list[dict[str, Any]]) -> str:
    """A table, then one line per error."""
    table = [("CLUSTER", "SYNC", "REVISION", "RESULT", "OBJECTS", "AGE")]
    for r in rows:
        rev = (r["revision"] or "-")[:12]
        table.append((r["cluster"], r["sync"], rev, r["result"], str(r["objects"]), _age(r["attempted_at"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines += [f"{r['cluster']}/{r['sync']}: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines)


def rollout_lines(fleet: Fleet, state: StateStore) -> list[str]:
    """Where each rollout wave stands, when the fleet has more than one wave."""
    waves = sorted({c.wave for c in fleet.clusters})
    if len(waves) < 2:
        return []
    allowed = state.rollout()
    held = " (held by an operator: fleetd rollout resume)" if state.flag("rollout_held") else ""
    parts = [f"wave {w} at {(allowed.get(w) or '-')[:12]}" for w in waves]
    return [f"rollout: {', '.join(parts)}{held}"]

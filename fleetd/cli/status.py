"""``fleetd status`` as people read it: a table of every sync, its errors, and the rollout.

When replicas share the fleet, every row also names the replica that owns
its cluster (read from the management cluster's Leases), and a line lists
the replicas, live or gone.
"""

from __future__ import annotations

import time
from typing import Any

from fleetd.daemon.store import StateStore
from fleetd.inventory import Fleet
from fleetd.shard.ownership import Ownership
from fleetd.util.durations import format_duration


def _age(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return format_duration(max(0.0, round(time.time() - timestamp)))


def render_status(rows: list[dict[str, Any]]) -> str:
    """A table, then one line per error."""
    sharded = any("owner" in r for r in rows)
    table = [("CLUSTER", "SYNC", "REVISION", "RESULT", "OBJECTS", "AGE", *(("OWNER",) if sharded else ()))]
    for r in rows:
        rev = (r["revision"] or "-")[:12]
        owner = (r.get("owner") or "-",) if sharded else ()
        age = _age(r["attempted_at"])
        table.append((r["cluster"], r["sync"], rev, r["result"], str(r["objects"]), age, *owner))
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


def with_owners(rows: list[dict[str, Any]], identity: str, ownership: Ownership) -> bool:
    """Name each row's owner; whether all is well: every cluster owned, this replica's syncs ready."""
    for row in rows:
        row["owner"] = ownership.holders.get(row["cluster"])
    mine = [r for r in rows if r["owner"] == identity]
    return (
        ownership.error is None
        and all(r["owner"] for r in rows)
        and all(r["result"] == "ready" for r in mine)
    )


def shard_lines(identity: str, ownership: Ownership, clusters: list[str]) -> list[str]:
    """The replicas as the management cluster's Leases show them, and clusters nobody owns."""
    if ownership.error is not None:
        return [f"sharding: cannot read the management cluster: {ownership.error}"]
    parts = []
    for replica in ownership.replicas:
        count = sum(1 for h in ownership.holders.values() if h == replica.name)
        state = "live" if replica.live else f"gone (last renewed {_ago(replica.renewed_ago)})"
        me = " (this one)" if replica.name == identity else ""
        parts.append(f"{replica.name}{me} {state}, {count} cluster(s)")
    lines = [f"replicas: {'; '.join(parts) or 'none'}"]
    unowned = [c for c in clusters if c not in ownership.holders]
    if unowned:
        lines.append(f"owned by no replica yet: {', '.join(unowned)}")
    return lines


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{format_duration(max(0.0, round(seconds)))} ago"

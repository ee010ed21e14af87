"""``fleetd status`` as people read it: a table of every sync, its errors, and the rollout."""

from __future__ import annotations

import time
from typing import Any

from fleetd.daemon.store import StateStore
from fleetd.inventory import Fleet
from fleetd.util.durations import format_duration


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

"""The history and detail API (``/api/v1/...``) as JSON documents, away from HTTP.

Every document is built from the fleet state (`fleetd.daemon.state`) and,
for what only the running daemon knows (object health, server versions,
diffs, commit authors), from an `Inspector`. The shapes are documented in
``fleetd/api/openapi.yaml``; a test validates real answers against it, so
the two cannot drift apart.

One word sums up a sync, its **state**: ``ready``, ``failed``, ``waiting``,
``held``, ``suspended`` (by the inventory or an operator, even before the
next reconcile records it) or ``pending`` (never reconciled). Drift is
counted next to it, not folded into it: a ready sync with drifted objects
under ``drift = "report"`` is still applied at its revision.

``problems`` lists what needs a person, worst first: the source failing,
the state directory not recording, a rejected inventory, a halted or held
rollout, unreachable clusters, failed, held, drifted and waiting syncs.
Nothing secret is in any document: errors and events are free of values
by construction (see `fleetd.daemon.events`), and diffs mask Secrets.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from fleetd.api.inspect import Inspector
from fleetd.daemon.events import Event, EventKind
from fleetd.daemon.rollout import Position
from fleetd.daemon.state import FleetState
from fleetd.daemon.status import sharding_section, sync_fields
from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Sync
from fleetd.reconcile.diff import SyncDiff
from fleetd.source import redact
from fleetd.util.durations import DurationError, parse_duration

MAX_EVENTS: Final = 1000
DEFAULT_EVENTS: Final = 100
HISTORY: Final = 100
REVISIONS: Final = 50
_FILE_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:ya?ml|json|toml))(?:[#:](\d+))?")
_SEVERITY = {"error": 0, "warning": 1}


class Problem(FleetdError):
    """A request the API cannot answer: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- one sync, one cluster ------------------------------------------------------------------


def sync_state(state: FleetState, cluster: Cluster, sync: Sync) -> str:
    """The one word for a sync (see the module docstring)."""
    suspended = state.suspended(cluster.name)
    if cluster.suspend or sync.suspend or "" in suspended or sync.name in suspended:
        return "suspended"
    status = state.status(cluster.name, sync.name)
    return str(status.result) if status is not None else "pending"


def sync_row(state: FleetState, cluster: Cluster, sync: Sync) -> dict[str, Any]:
    status = state.status(cluster.name, sync.name)
    fields = sync_fields(status)
    return {
        "name": sync.name, "state": sync_state(state, cluster, sync), "revision": fields["revision"],
        "objects": fields["objects"], "drifted": state.drifted_count(cluster.name, sync.name),
        "error": fields["error"], "attempted_at": fields["attempted_at"],
        "succeeded_at": fields["succeeded_at"], "duration": status.duration if status else None,
        "depends_on": list(sync.depends_on),
    }  # fmt: skip


def cluster_row(state: FleetState, cluster: Cluster) -> dict[str, Any]:
    health = state.cluster(cluster.name)
    row = {
        "name": cluster.name, "wave": cluster.wave,
        "revision": state.rollout.revision_for(cluster.wave),
        "reachable": health.reachable, "last_error": health.last_error,
        "suspended": cluster.suspend or "" in state.suspended(cluster.name),
        "labels": dict(cluster.labels),
        "syncs": [sync_row(state, cluster, s) for s in cluster.syncs],
    }  # fmt: skip
    if state.shard is not None:  # replicas share the fleet: who serves this cluster
        row["owner"] = state.owner_of(cluster.name)
    return row


def find(state: FleetState, cluster: str, sync: str | None = None) -> tuple[Cluster, Sync | None]:
    """The inventory's cluster (and sync), or a 404 naming what exists."""
    try:
        found = state.fleet.cluster(cluster)
    except KeyError:
        known = ", ".join(c.name for c in state.fleet.clusters) or "none"
        raise Problem(404, f"no cluster {cluster!r} in the inventory (clusters: {known})") from None
    if sync is None:
        return found, None
    try:
        return found, found.sync(sync)
    except KeyError:
        known = ", ".join(s.name for s in found.syncs) or "none"
        raise Problem(404, f"cluster {cluster} has no sync {sync!r} (its syncs: {known})") from None


# -- the fleet ----------------------------------------------------------------------------


def source_doc(state: FleetState) -> dict[str, Any]:
    source, config = state.source, state.fleet.source
    return {
        "url": redact(config.url), "ref": f"{config.ref.kind} {config.ref.value}",
        "revision": source.revision, "message": source.message, "last_error": source.last_error,
        "last_fetch": source.last_fetch,
    }  # fmt: skip


def overview(state: FleetState) -> dict[str, Any]:
    """``GET /api/v1/clusters``: every cluster and sync, a summary and the problems."""
    clusters = [cluster_row(state, c) for c in state.fleet.clusters]
    rows = [s for c in clusters for s in c["syncs"]]
    counts = dict.fromkeys(("ready", "failed", "waiting", "held", "suspended", "pending"), 0)
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = {
        "clusters": len(clusters), "syncs": len(rows), **counts,
        "drifted_objects": sum(r["drifted"] for r in rows),
        "unreachable": sum(c["reachable"] is False for c in clusters),
    }  # fmt: skip
    doc = {
        "fleet": state.fleet.name, "time": time.time(), "source": source_doc(state),
        "rollout": state.position().to_json(), "summary": summary, "problems": problems(state, clusters),
        "clusters": clusters,
    }  # fmt: skip
    if state.shard is not None:
        doc["sharding"] = sharding_section(state.shard)
    return doc


def problems(state: FleetState, clusters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What needs a person, worst first."""
    found: list[dict[str, Any]] = []

    def add(
        severity: str, what: str, message: str, cluster: str | None = None, sync: str | None = None
    ) -> None:
        found.append(
            {"severity": severity, "what": what, "cluster": cluster, "sync": sync, "message": message}
        )

    if state.source.last_error:
        add("error", "source", state.source.last_error)
    if state.recording_error:
        add("error", "state", state.recording_error)
    if state.inventory_error:
        add("error", "inventory", f"inventory rejected, the last good one stays: {state.inventory_error}")
    position = state.position()
    if position.halted_at is not None:
        add("error", "rollout", f"rollout halted: wave {position.halted_at} failed; later waves wait")
    if position.held:
        add("warning", "rollout", "rollout held by an operator; no wave takes a newer revision")
    for c in clusters:
        if c["reachable"] is False:
            add("error", "unreachable", c["last_error"] or "unreachable", c["name"])
        for s in c["syncs"]:
            first = (s["error"] or "").splitlines()[0] if s["error"] else ""
            if s["state"] == "failed":
                add("error", "failed", first or "failed", c["name"], s["name"])
            elif s["state"] == "held":
                add("warning", "held", first or "prune held", c["name"], s["name"])
            elif s["state"] == "waiting":
                add("warning", "waiting", first or "waiting", c["name"], s["name"])
            if s["drifted"]:
                add("warning", "drifted", f"{s['drifted']} object(s) drifted from git", c["name"], s["name"])
    found.sort(key=lambda p: _SEVERITY.get(p["severity"], 2))
    return found


async def cluster_detail(state: FleetState, inspector: Inspector, name: str) -> dict[str, Any]:
    """``GET /api/v1/clusters/{cluster}``."""
    cluster, _ = find(state, name)
    health = state.cluster(name)
    return {
        **cluster_row(state, cluster),
        "server": inspector.server_url(name), "version": await inspector.server_version(name),
        "requests": dict(health.requests), "errors": dict(health.errors),
        "events": [e.to_json() for e in reversed(state.events(cluster=name, limit=50))],
    }  # fmt: skip


async def sync_detail(state: FleetState, inspector: Inspector, cluster: str, name: str) -> dict[str, Any]:
    """``GET /api/v1/clusters/{cluster}/syncs/{sync}``."""
    target, sync = find(state, cluster, name)
    assert sync is not None
    status = state.status(cluster, name)
    objects = await inspector.objects(cluster, name)
    applied = state.applied.get((cluster, name))
    return {
        "cluster": cluster, **sync_row(state, target, sync),
        "config": {
            "path": str(sync.path), "namespace": sync.namespace, "interval": sync.interval,
            "timeout": sync.timeout, "prune": sync.prune, "wait": sync.wait, "drift": str(sync.drift),
            "fleet_wide": sync.fleet_wide, "source_file": str(sync.source_file),
        },
        "dependents": [s.name for s in target.syncs if name in s.depends_on],
        "graph": [
            {"name": s.name, "state": sync_state(state, target, s), "depends_on": list(s.depends_on)}
            for s in target.syncs
        ],
        "applied_revision": applied, "changed": status.changed if status else 0,
        "pruned": status.pruned if status else 0,
        "last_error": _error(state, cluster, name, status.error if status else None),
        "object_count": status.objects if status else 0,
        "objects": [o.to_json(applied) for o in objects.rows],
        "objects_source": objects.source, "objects_note": objects.note,
        "history": [e.to_json() for e in reversed(state.events(cluster=cluster, sync=name, limit=HISTORY))],
    }  # fmt: skip


def _error(state: FleetState, cluster: str, sync: str, error: str | None) -> dict[str, Any] | None:
    """The last error in full, with the objects (from its event) and files (from its text) it names."""
    if not error:
        return None
    failed = state.events(cluster=cluster, sync=sync, kinds=(str(EventKind.RECONCILE_FAILED),), limit=1)
    files = [{"path": m[1], "line": int(m[2]) if m[2] else None} for m in _FILE_REF.finditer(error)]
    unique = [dict(t) for t in dict.fromkeys(tuple(f.items()) for f in files)]
    return {"message": error, "objects": list(failed[-1].objects) if failed else [], "files": unique}


def diff_doc(cluster: str, revision: str | None, diff: SyncDiff) -> dict[str, Any]:
    """``GET .../diff``: the daemon's plan of one sync, Secrets masked."""
    return {
        "cluster": cluster, "sync": diff.name, "revision": revision, "note": diff.note,
        "errors": list(diff.errors),
        "objects": [
            {
                "kind": o.ref.kind, "group": o.ref.group, "namespace": o.ref.namespace or None,
                "name": o.ref.name, "action": o.action, "origin": o.origin, "diff": o.diff,
                "notes": list(o.notes),
            }
            for o in diff.objects
        ],
    }  # fmt: skip


# -- events ----------------------------------------------------------------------------------


def event_filters(query: Mapping[str, str], kinds: list[str], now: float | None = None) -> dict[str, Any]:
    """Journal filters from ``cluster``, ``sync``, ``kind`` (repeatable, comma-separated; a group
    such as ``drift`` means every ``drift.*``), ``since`` (Unix seconds, ISO 8601 or a duration
    back from now such as ``15m``), ``after`` (an event id) and ``limit``; 400 on a bad value."""
    filters: dict[str, Any] = {}
    for key in ("cluster", "sync"):
        if query.get(key):
            filters[key] = query[key]
    wanted = [k.strip() for value in kinds for k in value.split(",") if k.strip()]
    if wanted:
        filters["kinds"] = expand_kinds(wanted)
    if query.get("since"):
        filters["since"] = parse_since(query["since"], time.time() if now is None else now)
    if query.get("after"):
        filters["after_id"] = _integer(query["after"], "after", minimum=0)
    filters["limit"] = _integer(
        query.get("limit") or str(DEFAULT_EVENTS), "limit", minimum=1, maximum=MAX_EVENTS
    )
    return filters


def expand_kinds(wanted: list[str]) -> tuple[str, ...]:
    names = [str(k) for k in EventKind]
    out: list[str] = []
    for kind in wanted:
        matched = [n for n in names if n == kind or n.startswith(kind + ".")]
        if not matched:
            groups = sorted({n.split(".")[0] for n in names})
            raise Problem(
                400, f"unknown event kind {kind!r} (kinds: {', '.join(names)}; groups: {', '.join(groups)})"
            )
        out += matched
    return tuple(dict.fromkeys(out))


def parse_since(text: str, now: float) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return now - parse_duration(text)
    except DurationError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(
            400, f"since={text!r}: give Unix seconds, an ISO 8601 time or a duration such as 15m"
        ) from None
    return moment.timestamp()


def _integer(text: str, name: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise Problem(400, f"{name}={text!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
        raise Problem(400, f"{name}={value} is out of range ({bound})")
    return value


def events_doc(state: FleetState, filters: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /api/v1/events``: matching journal events, newest first."""
    found: list[Event] = state.events(**filters)
    return {"events": [e.to_json() for e in reversed(found)], "count": len(found)}


# -- revisions -------------------------------------------------------------------------------


async def revisions_doc(state: FleetState, inspector: Inspector) -> dict[str, Any]:
    """``GET /api/v1/revisions``: revisions seen, newest first, and where each is in the rollout."""
    seen = state.events(kinds=(str(EventKind.SOURCE_REVISION),), limit=REVISIONS)
    position = state.position()
    order: dict[str, Event | None] = {e.revision: e for e in reversed(seen) if e.revision}
    for revision in [state.source.revision, *position.allowed.values()]:
        if revision and revision not in order:
            order[revision] = None
    at: dict[str, list[str]] = {}
    for (cluster, _), status in state.statuses.items():
        names = at.setdefault(status.revision, [])
        if cluster not in names:
            names.append(cluster)
    out = []
    for revision, event in order.items():
        commit = await inspector.commit(revision)
        waves = sorted(w for w, r in position.allowed.items() if r == revision)
        out.append({
            "revision": revision, "message": _summary(event, revision, state),
            "author": commit.author if commit else None, "committed_at": commit.time if commit else None,
            "seen_at": event.time if event else None, "current": revision == state.source.revision,
            "target": revision == position.target, "waves": waves, "clusters": sorted(at.get(revision, [])),
            "rollout": _where(revision, waves, state.rollout.waves, position),
        })  # fmt: skip
    return {"target": position.target, "rollout": position.to_json(), "revisions": out}


def _summary(event: Event | None, revision: str, state: FleetState) -> str | None:
    if revision == state.source.revision and state.source.message:
        return state.source.message
    if event is None:
        return None
    match = re.match(r"new revision \w+ \([^)]*\)(?:: (.*))?$", event.message, re.S)
    return match[1] if match and match[1] else None


def _where(revision: str, waves: list[int], every: list[int], position: Position) -> str:
    """For the target: complete, rolling out, halted or held; for others: applied or superseded."""
    if revision != position.target:
        return "applied" if waves else "superseded"
    if set(every) <= set(waves):
        return "complete"
    if position.halted_at is not None:
        return "halted"
    return "held" if position.held else "rolling out"

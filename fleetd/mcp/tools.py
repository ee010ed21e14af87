"""The MCP tools: what each answers, for an agent, and which exist only with ``--read-write``.

Every tool is a plain async function with typed parameters (the SDK turns
them into JSON schemas) returning a JSON object; `fleetd.mcp.server`
registers them. Read-only tools (`read_tools`) read through `FleetAccess`
and run GETs and server-side dry runs on spokes at most. Write tools
(`write_tools`) are commands to the running daemon, each of which the
daemon records as an event. Every answer passes `views.guard`, and the
tools built on rendering scrub secret values first.

Descriptions are written for a model choosing a tool: what it answers,
when to use it, and what to call next.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fleetd.errors import FleetdError
from fleetd.mcp import explain as explaining
from fleetd.mcp import manifests, views
from fleetd.mcp.access import FleetAccess, ToolFailure
from fleetd.reconcile.diff import diff_cluster

Tool = Callable[..., Awaitable[dict[str, Any]]]
#: Most events one call returns.
MAX_EVENTS = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    name: str
    fn: Tool
    title: str
    description: str
    writes: bool = False


DESCRIPTIONS: dict[str, str] = {
    "fleet_status": (
        "Start here. Summarises the whole fleet: the git source and its revision, the rollout across "
        "waves, every cluster (reachable or not, its syncs counted by result, drifted objects) and an "
        "'attention' list of what is wrong now (failed syncs with their error, unreachable clusters, "
        "drift). 'live' is false when the daemon is not running and the answer is the last recorded "
        "state. Then use get_cluster, get_sync or explain_sync on what needs attention."
    ),
    "get_cluster": (
        "One cluster: whether its API server answers (and the last connection error), its rollout wave "
        "and the revision that wave applies, its labels, and every sync with result, revision, object "
        "counts, last error, drift count and times. Use it when fleet_status points at a cluster."
    ),
    "get_sync": (
        "One sync on one cluster in depth: its settings from the inventory (path, prune, wait, drift "
        "policy, depends_on), the last reconcile's result, revision and full error, the objects that "
        "drifted from git now and why, every object the sync manages with its live health (current, "
        "in_progress, failed, missing; set live_health=false to skip reading the cluster), and its recent"
        " events. Secret values are never included. Use explain_sync for a diagnosis."
    ),
    "list_events": (
        "The event journal, oldest first: reconciles (started, succeeded, failed), drift (detected, "
        "corrected, reported), prunes, rollout moves, cluster reachability, new revisions, inventory "
        "reloads and operator actions, each with cluster, sync, revision, severity and message. Filter by"
        " cluster, sync, kinds (e.g. ['reconcile.failed', 'drift.detected']), min_severity (info, "
        "warning, error), since_minutes, and limit (at most 500). Use it to see what happened and when."
    ),
    "diff": (
        "What the daemon would change on a cluster now, computed by server-side dry run against the live "
        "objects, without writing anything: each object created, changed (with a unified diff) or pruned,"
        " for one sync or (without sync) all of the cluster's. Secret values are masked as *** ('*** "
        "(changed)' when they differ). Fetches the source and renders, so it takes seconds. Use it before"
        " a reconcile, or to see why a sync drifted or fails validation."
    ),
    "rendered_manifests": (
        "The objects a sync renders for a cluster at the head of the source's ref, exactly as the daemon "
        "would apply them (kustomize or plain YAML, the cluster's variables, ownership labels), each with"
        " the file it comes from. Secret data is masked, and objects decrypted from SOPS files show only "
        "their identity. Use it to check what git says for one cluster; use diff to compare with the "
        "cluster."
    ),
    "rollout_status": (
        "The source's current revision, the rollout target, which revision each wave applies and which "
        "clusters are in it (with each sync's revision and result), whether the rollout is halted by a "
        "failing wave or held by an operator, and the latest revisions fetched and rollout events. Use it"
        " to answer 'where is commit X deployed?' or 'why has wave 2 not got the new commit?'."
    ),
    "explain_sync": (
        "Why a sync is not ready, in plain reasons with next steps: suspended, cluster unreachable, held "
        "back by the rollout (a failing earlier wave or an operator's hold), waiting for its depends_on, "
        "the last error, a prune held by the deletion budget, never reconciled, behind its wave's "
        "revision, or drifted. Returns ready=true with no reasons when all is well. Use it first when a "
        "user asks 'why is X not deployed/ready?'."
    ),
    "reconcile": (
        "Ask the running daemon to reconcile now: one sync, one cluster, or (with no arguments) the whole"
        " fleet, dry-running every object. It does not fetch git; it re-applies the revision each wave "
        "has. The daemon records it as an event (see list_events)."
    ),
    "suspend": (
        "Stop applying and correcting drift for a cluster or one of its syncs until resume. Objects stay "
        "as they are on the cluster. The daemon records it as an event (see list_events)."
    ),
    "resume": (
        "Undo suspend for a cluster or one sync; it is reconciled at once. The daemon records it as an "
        "event (see list_events)."
    ),
    "rollout_hold": (
        "Stop the rollout where it is: no wave takes a newer revision until rollout_resume. The daemon "
        "records it as an event (see list_events)."
    ),
    "rollout_resume": (
        "Let the rollout continue after rollout_hold. The daemon records it as an event (see list_events)."
    ),
    "rollout_promote": (
        "Give the next wave the newest revision even though the wave before it is not healthy. Use only "
        "when a user asks to push past a failing wave. The daemon records it as an event (see "
        "list_events)."
    ),
}


def read_tools(access: FleetAccess) -> list[ToolSpec]:
    async def fleet_status() -> dict[str, Any]:
        return views.guard(views.overview(await access.status()))

    async def get_cluster(cluster: str) -> dict[str, Any]:
        return views.guard(views.cluster_view(await access.status(), await access.fleet(), cluster))

    async def get_sync(cluster: str, sync: str, live_health: bool = True) -> dict[str, Any]:
        doc, fleet = await access.status(), await access.fleet()
        declared = views.inventory_cluster(fleet, cluster)
        views.inventory_sync(declared, sync)
        ledger = await access.ledger(cluster, sync)
        health, note = (None, None)
        if live_health and ledger is not None:
            health, note = await manifests.health(declared, ledger)
        events = await access.events(cluster=cluster, sync=sync, limit=20)
        answer = views.sync_view(
            doc, fleet, cluster, sync, ledger=ledger, events=events, health=health, health_note=note
        )
        return views.guard(answer)

    async def list_events(
        cluster: str | None = None,
        sync: str | None = None,
        kinds: list[str] | None = None,
        min_severity: str = "info",
        since_minutes: float | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        ranks = {"info": 0, "warning": 1, "error": 2}
        if min_severity not in ranks:
            raise ToolFailure("min_severity is one of info, warning, error")
        since = time.time() - since_minutes * 60 if since_minutes else None
        found = await access.events(
            cluster=cluster,
            sync=sync,
            kinds=tuple(kinds or ()),
            since=since,
            limit=max(1, min(limit, MAX_EVENTS)) * (1 if min_severity == "info" else 4),
        )
        found = [e for e in found if ranks[str(e.severity)] >= ranks[min_severity]][
            -max(1, min(limit, MAX_EVENTS)) :
        ]
        return views.guard({"count": len(found), "events": [views.event_json(e) for e in found]})

    async def diff(cluster: str, sync: str | None = None) -> dict[str, Any]:
        fleet = await access.fleet()
        try:
            report = await diff_cluster(fleet, cluster, sync)
        except FleetdError as exc:
            raise ToolFailure(str(exc)) from exc
        return views.guard(views.diff_json(report))

    async def rendered_manifests(cluster: str, sync: str) -> dict[str, Any]:
        fleet = await access.fleet()
        declared = views.inventory_cluster(fleet, cluster)
        return views.guard(await manifests.rendered(fleet, declared, views.inventory_sync(declared, sync)))

    async def rollout_status() -> dict[str, Any]:
        doc, fleet = await access.status(), await access.fleet()
        revisions = await access.events(kinds=("source.revision",), limit=20)
        rollout = await access.events(
            kinds=(
                "rollout.advanced",
                "rollout.halted",
                "rollout.held",
                "rollout.resumed",
                "rollout.promoted",
            ),
            limit=20,
        )
        return views.guard(views.rollout_view(doc, fleet, revisions, rollout))

    async def explain_sync(cluster: str, sync: str) -> dict[str, Any]:
        doc, fleet = await access.status(), await access.fleet()
        events = await access.events(cluster=cluster, sync=sync, limit=50)
        return views.guard(explaining.explain(doc, fleet, cluster, sync, events))

    return [
        ToolSpec(
            name="fleet_status",
            fn=fleet_status,
            title="Fleet status",
            description=DESCRIPTIONS["fleet_status"],
        ),
        ToolSpec(
            name="get_cluster",
            fn=get_cluster,
            title="Get a cluster",
            description=DESCRIPTIONS["get_cluster"],
        ),
        ToolSpec(
            name="get_sync",
            fn=get_sync,
            title="Get a sync",
            description=DESCRIPTIONS["get_sync"],
        ),
        ToolSpec(
            name="list_events",
            fn=list_events,
            title="List events",
            description=DESCRIPTIONS["list_events"],
        ),
        ToolSpec(
            name="diff",
            fn=diff,
            title="Diff against git",
            description=DESCRIPTIONS["diff"],
        ),
        ToolSpec(
            name="rendered_manifests",
            fn=rendered_manifests,
            title="Rendered manifests",
            description=DESCRIPTIONS["rendered_manifests"],
        ),
        ToolSpec(
            name="rollout_status",
            fn=rollout_status,
            title="Revisions and rollout",
            description=DESCRIPTIONS["rollout_status"],
        ),
        ToolSpec(
            name="explain_sync",
            fn=explain_sync,
            title="Explain a sync",
            description=DESCRIPTIONS["explain_sync"],
        ),
    ]


def write_tools(access: FleetAccess) -> list[ToolSpec]:
    async def reconcile(cluster: str | None = None, sync: str | None = None) -> dict[str, Any]:
        return {"message": await access.command("/v1/reconcile", {"cluster": cluster, "sync": sync})}

    async def suspend(cluster: str, sync: str | None = None) -> dict[str, Any]:
        return {"message": await access.command("/v1/suspend", {"cluster": cluster, "sync": sync})}

    async def resume(cluster: str, sync: str | None = None) -> dict[str, Any]:
        return {"message": await access.command("/v1/resume", {"cluster": cluster, "sync": sync})}

    async def rollout_hold() -> dict[str, Any]:
        return {"message": await access.command("/v1/rollout/hold")}

    async def rollout_resume() -> dict[str, Any]:
        return {"message": await access.command("/v1/rollout/resume")}

    async def rollout_promote() -> dict[str, Any]:
        return {"message": await access.command("/v1/rollout/promote")}

    return [
        ToolSpec(
            name="reconcile",
            fn=reconcile,
            title="Reconcile now",
            writes=True,
            description=DESCRIPTIONS["reconcile"],
        ),
        ToolSpec(
            name="suspend",
            fn=suspend,
            title="Suspend",
            writes=True,
            description=DESCRIPTIONS["suspend"],
        ),
        ToolSpec(
            name="resume",
            fn=resume,
            title="Resume",
            writes=True,
            description=DESCRIPTIONS["resume"],
        ),
        ToolSpec(
            name="rollout_hold",
            fn=rollout_hold,
            title="Hold the rollout",
            writes=True,
            description=DESCRIPTIONS["rollout_hold"],
        ),
        ToolSpec(
            name="rollout_resume",
            fn=rollout_resume,
            title="Resume the rollout",
            writes=True,
            description=DESCRIPTIONS["rollout_resume"],
        ),
        ToolSpec(
            name="rollout_promote",
            fn=rollout_promote,
            title="Promote the rollout",
            writes=True,
            description=DESCRIPTIONS["rollout_promote"],
        ),
    ]

"""Why a sync is not ready: every reason fleetd knows, and what would fix each.

Pure: it reads the status document (`fleetd.daemon.status`), the inventory
and the sync's recent events, and answers ``{ready, summary, reasons,
next_steps}``. Reasons are checked in the order an operator would look:
suspended, cluster unreachable, held back by the rollout, waiting for
dependencies, failed (with the error), prune held, never reconciled,
behind its wave's revision, drifted.
"""

from __future__ import annotations

from typing import Any

from fleetd.daemon.events import Event
from fleetd.inventory import Fleet
from fleetd.mcp.views import cluster_of, first_line, inventory_cluster, inventory_sync, sync_of


def explain(
    doc: dict[str, Any], fleet: Fleet, cluster: str, sync: str, events: list[Event]
) -> dict[str, Any]:
    found = cluster_of(doc, cluster)
    status = sync_of(found, sync)
    declared_cluster = inventory_cluster(fleet, cluster)
    declared = inventory_sync(declared_cluster, sync)
    reasons: list[str] = []
    steps: list[str] = []
    result, revision = status["result"], status.get("revision")

    def reason(text: str, *fix: str) -> None:
        reasons.append(text)
        steps.extend(f for f in fix if f not in steps)

    if status.get("suspended") or declared.suspend or declared_cluster.suspend:
        where = "in the inventory" if declared.suspend or declared_cluster.suspend else "by an operator"
        reason(
            f"suspended {where}: nothing is applied or corrected",
            f"resume it (fleetd resume {cluster} {sync}, or remove suspend from the inventory)",
        )
    if found.get("reachable") is False:
        reason(
            f"cluster {cluster} is unreachable: {first_line(found.get('last_error'))}",
            "check the API server, network and kubeconfig (fleetd check)",
        )
    _rollout(doc, found, reason)
    if result == "waiting":
        _dependencies(found, declared.depends_on, revision, reason)
    if result == "failed":
        failures = sum(1 for e in events if e.kind == "reconcile.failed")
        reason(
            f"the last reconcile failed at {(revision or '?')[:12]}: {status.get('error')}",
            f"read the error; preview the change with the diff tool (cluster {cluster}, sync {sync}); "
            "fix git and push, then fleetd retries by itself",
        )
        if failures > 1:
            reasons.append(f"{failures} failed reconciles among the recent events")
        if status.get("written"):
            reasons.append(f"objects written before the failure: {', '.join(status['written'][:10])}")
    if result == "held":
        reason(
            f"applied, but the prune is held by the deletion budget: {first_line(status.get('error'))}",
            f"check the diff; if the deletions are meant, fleetd prune --allow {cluster} {sync}",
        )
    if result == "pending":
        reason(
            "never reconciled yet (the daemon just started, the source was not fetched, or its wave "
            "has no revision yet)"
        )
    wave_revision = found.get("revision")
    if result == "ready" and wave_revision and revision and revision != wave_revision:
        reason(
            f"ready at {revision[:12]}, but its wave applies {wave_revision[:12]} now: a reconcile is due",
            f"wait, or ask for one (fleetd reconcile {cluster} {sync})",
        )
    if status.get("drifted"):
        objects = ", ".join(d["object"] for d in (status.get("drifted_objects") or [])[:10])
        fix = (
            "revert the objects, or commit the change to git"
            if declared.drift == "report"
            else "fleetd corrects it on its own; if it comes back, something else writes the object"
        )
        reason(f"{status['drifted']} object(s) differ from git (drift = {declared.drift}): {objects}", fix)
    ready = result == "ready" and not reasons
    summary = "ready: applied at its wave's revision, nothing drifted" if ready else reasons[0]
    return {
        "cluster": cluster,
        "sync": sync,
        "result": result,
        "revision": revision,
        "ready": ready,
        "summary": summary,
        "reasons": reasons,
        "next_steps": steps,
        "live": doc.get("live", True),
    }


def _rollout(doc: dict[str, Any], cluster: dict[str, Any], reason: Any) -> None:
    position = doc.get("rollout") or {}
    target, wave = position.get("target"), cluster.get("wave")
    applies = (position.get("waves") or {}).get(str(wave))
    if target is None or applies == target:
        return
    held_by = position.get("halted_at_wave")
    if held_by is not None and wave is not None and held_by < wave:
        reason(
            f"held back by the rollout: wave {held_by} failed at {target[:12]}, so wave {wave} keeps "
            f"{(applies or 'nothing')[:12]}",
            f"fix the failing clusters of wave {held_by}, or fleetd rollout promote",
        )
    elif position.get("held"):
        reason(
            f"held back by the rollout: an operator holds it; wave {wave} keeps "
            f"{(applies or 'nothing')[:12]}",
            "fleetd rollout resume",
        )
    else:
        reason(
            f"waiting for the rollout: wave {wave} gets {target[:12]} once the waves before it are ready "
            "at it",
            "wait for the earlier waves (rollout_status shows them)",
        )


def _dependencies(
    cluster: dict[str, Any], depends_on: tuple[str, ...], revision: str | None, reason: Any
) -> None:
    syncs = {s["name"]: s for s in cluster["syncs"]}
    for name in depends_on:
        dep = syncs.get(name)
        if dep is None:
            continue
        if dep["result"] != "ready" or dep.get("revision") != revision:
            at = (dep.get("revision") or "no revision")[:12]
            reason(
                f"waits for its dependency {name}, which is {dep['result']} at {at}",
                f"explain sync {name} on this cluster",
            )

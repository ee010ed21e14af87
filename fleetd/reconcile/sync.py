"""Reconcile one sync on one cluster: render, apply, prune, remember.

The order of the steps is the safety argument:

1. **render** (shared across clusters by the render cache) — a failure here
   stops the sync before any API call;
2. **apply** (validate everything by dry run, then write what differs) — a
   failure stops the sync before pruning; objects created before the
   failure are added to the ledger so they can still be pruned later;
3. **prune** the ledger's objects that are no longer rendered — only after
   a fully successful apply, and only if the sync prunes;
4. **record** the new ledger in the spoke and locally.

Every object is labelled with the fleet and sync that own it; pruning
refuses objects without those labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetd.daemon.store import StateStore, SyncStatus
from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Sync
from fleetd.kube.client import ApiError, KubeClient, KubeError
from fleetd.kube.discovery import Discovery
from fleetd.kube.objects import (
    FIELD_MANAGER,
    LABEL_FLEET,
    LABEL_MANAGED_BY,
    LABEL_SYNC,
    Entry,
    ObjRef,
    ref_of,
)
from fleetd.reconcile.apply import Applier, ApplyFailed, Change, Desired
from fleetd.reconcile.drift import DriftTracker, Managed, managed_from
from fleetd.reconcile.health import wait_healthy
from fleetd.reconcile.ledger import Ledger, LedgerStore
from fleetd.reconcile.prune import Pruned, prune
from fleetd.render import Decrypt, RenderCache
from fleetd.source.git import Snapshot

log = logging.getLogger(__name__)

#: Reconciles re-read API discovery at most this often (seconds); unknown kinds refresh it anyway.
DISCOVERY_MAX_AGE = 60.0


@dataclass(slots=True)
class ClusterSession:
    """Everything needed to talk to one cluster, created once per connection."""

    fleet: str
    cluster: Cluster
    client: KubeClient
    discovery: Discovery
    applier: Applier
    ledgers: LedgerStore
    state: StateStore
    renders: RenderCache
    drift: DriftTracker
    lock: asyncio.Lock
    decrypt: Decrypt | None = None
    drift_task: asyncio.Task[None] | None = None
    log: ClusterLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = ClusterLog(log, {"cluster": self.cluster.name})


class ClusterLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with the cluster and keeps it as a structured field."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"cluster {extra.get('cluster')}: {msg}", kwargs


def owned(obj: dict[str, Any], fleet: str, sync: str) -> dict[str, Any]:
    """A copy of ``obj`` carrying fleetd's ownership labels."""
    out = copy.deepcopy(obj)
    labels = out.setdefault("metadata", {}).setdefault("labels", {}) or {}
    labels.update({LABEL_FLEET: fleet, LABEL_SYNC: sync, LABEL_MANAGED_BY: FIELD_MANAGER})
    out["metadata"]["labels"] = labels
    return out


async def reconcile_sync(
    session: ClusterSession, sync: Sync, snapshot: Snapshot, *, full: bool = False
) -> SyncStatus:
    """Run one reconcile of ``sync``; never raises for expected failures, returns the status instead.

    ``full``: dry-run every object even where the watches vouch for it (an explicit request).
    """
    started = time.monotonic()
    try:
        async with asyncio.timeout(sync.timeout):
            objects, changes, pruned = await _reconcile(session, sync, snapshot, full, started + sync.timeout)
    except TimeoutError:
        error = f"reconcile did not finish within the sync's timeout of {sync.timeout:g}s"
        return _failed(session, sync, snapshot, error, started)
    except (FleetdError, KubeError) as exc:
        return _failed(session, sync, snapshot, str(exc), started)
    status = SyncStatus(
        cluster=session.cluster.name,
        sync=sync.name,
        revision=snapshot.revision,
        result="ready",
        objects=objects,
        changed=sum(c.action != "unchanged" for c in changes),
        pruned=sum(p.outcome == "deleted" for p in pruned),
        attempted_at=time.time(),
        succeeded_at=time.time(),
        duration=time.monotonic() - started,
    )
    session.state.save_status(status)
    return status


def _failed(
    session: ClusterSession, sync: Sync, snapshot: Snapshot, error: str, started: float
) -> SyncStatus:
    fields = {"sync": sync.name, "revision": snapshot.revision}
    session.log.warning("sync %s failed at %s: %s", sync.name, snapshot.revision[:12], error, extra=fields)
    status = SyncStatus(
        cluster=session.cluster.name, sync=sync.name, revision=snapshot.revision, result="failed",
        error=error, attempted_at=time.time(), duration=time.monotonic() - started,
    )  # fmt: skip
    session.state.save_status(status)
    return status


async def _reconcile(
    session: ClusterSession, sync: Sync, snapshot: Snapshot, full: bool, deadline: float
) -> tuple[int, list[Change], list[Pruned]]:
    desired = await desired_objects(session, sync, snapshot)
    previous = await session.ledgers.read(sync.name) or session.state.ledger(session.cluster.name, sync.name)
    old_entries = previous.entries if previous else frozenset()
    known = {} if full else session.drift.known_good(sync.name)
    unchanged = [known[d.ref] for d in desired if _same(d, known.get(d.ref))]
    fresh = [d for d in desired if not _same(d, known.get(d.ref))]
    try:
        changes = await session.applier.apply(fresh, wait_timeout=sync.timeout, force=sync.force)
    except ApplyFailed as exc:
        if exc.applied:  # remember what was written so a later prune can find it
            written = frozenset(Entry(c.ref, c.version) for c in exc.changes)
            await _record(session, sync, snapshot.revision, old_entries | written)
        raise
    current = frozenset(Entry(c.ref, c.version) for c in changes) | {
        Entry(m.desired.ref, m.resource.version) for m in unchanged
    }
    pruned: list[Pruned] = []
    stale = _stale(old_entries, current)
    if stale and sync.prune:
        pruned = await prune(session.client, session.discovery, stale, fleet=session.fleet, sync=sync.name)
        _log_pruned(session, sync, pruned)
    keep = current if sync.prune else current | stale
    await _record(session, sync, snapshot.revision, keep)
    sources = {d.origin: d.obj for d in desired}
    session.drift.register(sync.name, [*managed_from(sync.name, sync.drift, changes, sources), *unchanged])
    if sync.wait or sync.health_checks:
        # Leave a moment before the outer deadline so the message names what is not healthy.
        budget = max(0.1, deadline - time.monotonic() - 0.5)
        await wait_healthy(session.client, session.discovery, health_targets(sync, current), timeout=budget)
    session.log.info(
        "sync %s ready at %s: %d objects, %d changed (%d checked by dry run), %d pruned",
        sync.name, snapshot.revision[:12], len(desired), sum(c.action != "unchanged" for c in changes),
        len(fresh), sum(p.outcome == "deleted" for p in pruned),
        extra={"sync": sync.name, "revision": snapshot.revision},
    )  # fmt: skip
    return len(desired), changes, pruned


async def desired_objects(session: ClusterSession, sync: Sync, snapshot: Snapshot) -> list[Desired]:
    """What the applier gets for ``sync``: the shared render, ownership labels and keep-live paths."""
    discovery = session.discovery
    await discovery.refresh(if_older_than=DISCOVERY_MAX_AGE)

    def cluster_scoped(api_version: str, kind: str) -> bool:
        resource = discovery.known(api_version, kind)
        return resource is not None and not resource.namespaced

    rendered = await session.renders.get(
        snapshot.root, snapshot.revision, sync.path, session.cluster.variables, sync.namespace,
        cluster_scoped=cluster_scoped, decrypt=session.decrypt,
    )  # fmt: skip
    objs = [owned(r.obj, session.fleet, sync.name) for r in rendered.objects]
    kept = keep_live_paths(sync, objs, await hpa_targets(session, objs))
    return [
        Desired(obj=obj, origin=f"{r.file}#{r.document}", keep_live=kept(obj))
        for obj, r in zip(objs, rendered.objects, strict=True)
    ]


def health_targets(sync: Sync, entries: frozenset[Entry]) -> list[tuple[ObjRef, str]]:
    """The objects to wait for: every applied object, or those named by ``health_checks``."""
    if not sync.health_checks:
        return [(e.ref, e.version) for e in sorted(entries)]
    chosen = []
    for check in sync.health_checks:
        matches = [e for e in entries if _names(check, e.ref)]
        if not matches:
            raise FleetdError(f"sync {sync.name}: health check {check!r} names no object of this sync")
        chosen += [(e.ref, e.version) for e in matches]
    return chosen


def _names(check: str, ref: ObjRef) -> bool:
    kind, *rest = check.split("/")
    kind, _, group = kind.partition(".")
    namespace, name = (rest[0], rest[1]) if len(rest) == 2 else ("", rest[0])
    return (kind, group, namespace, name) == (ref.kind, ref.group, ref.namespace, ref.name) or (
        not group and (kind, namespace, name) == (ref.kind, ref.namespace, ref.name)
    )


def _same(d: Desired, known: Managed | None) -> bool:
    """Whether the watches already vouch that the server holds exactly this rendered object."""
    return known is not None and known.source == d.obj and known.desired.keep_live == d.keep_live


HPA_PATH = "/apis/autoscaling/v2/horizontalpodautoscalers"


async def hpa_targets(session: ClusterSession, objs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(namespace, kind, name) of every workload an HPA scales, live or about to be applied."""
    hpas = [o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"]
    with contextlib.suppress(ApiError):  # no autoscaling/v2 here: nothing scales anything
        hpas += (await session.client.request("GET", HPA_PATH)).get("items", [])
    targets = set()
    for hpa in hpas:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        namespace = (hpa.get("metadata") or {}).get("namespace") or "default"
        targets.add((namespace, str(target.get("kind")), str(target.get("name"))))
    return targets


def keep_live_paths(
    sync: Sync, objs: list[dict[str, Any]], scaled: set[tuple[str, str, str]]
) -> Callable[[dict[str, Any]], tuple[str, ...]]:
    """Per object, the JSON pointers whose live values fleetd keeps: ignore rules and HPA-owned replicas."""

    def kept(obj: dict[str, Any]) -> tuple[str, ...]:
        ref = ref_of(obj)
        namespace = ref.namespace or "default"
        paths = [
            p
            for rule in sync.ignore
            if rule.applies_to(group=ref.group, kind=ref.kind, name=ref.name, namespace=namespace)
            for p in rule.paths
        ]
        if (namespace, ref.kind, ref.name) in scaled:
            paths.append("/spec/replicas")
        return tuple(dict.fromkeys(paths))

    return kept


def _stale(old: frozenset[Entry], current: frozenset[Entry]) -> frozenset[Entry]:
    live_refs: set[ObjRef] = {e.ref for e in current}
    return frozenset(e for e in old if e.ref not in live_refs)


def _log_pruned(session: ClusterSession, sync: Sync, pruned: list[Pruned]) -> None:
    for p in pruned:
        if p.outcome == "deleted":
            session.log.info("sync %s pruned %s", sync.name, p.ref, extra={"sync": sync.name})
        elif p.outcome in ("protected", "foreign"):
            session.log.info("sync %s left %s in place (%s)", sync.name, p.ref, p.outcome)


async def _record(session: ClusterSession, sync: Sync, revision: str, entries: frozenset[Entry]) -> None:
    ledger = Ledger(sync=sync.name, revision=revision, prune=sync.prune, entries=entries)
    await session.ledgers.write(ledger)
    session.state.save_ledger(session.cluster.name, ledger)


async def prune_removed_syncs(session: ClusterSession, keep: set[str] | None = None) -> list[str]:
    """Clean up syncs this fleet once applied to the cluster but no longer assigns to it.

    ``keep``: the syncs to leave alone (default: those the cluster has); an empty
    set cleans up everything this fleet applied there (a cluster leaving the fleet).
    """
    assigned = {s.name for s in session.cluster.syncs} if keep is None else keep
    removed = []
    for ledger in await session.ledgers.read_all():
        if ledger.sync in assigned:
            continue
        if ledger.prune:
            pruned = await prune(
                session.client, session.discovery, ledger.entries, fleet=session.fleet, sync=ledger.sync
            )
            session.log.info(
                "sync %s was removed from this cluster: pruned %d object(s)",
                ledger.sync, sum(p.outcome == "deleted" for p in pruned),
            )  # fmt: skip
        await session.ledgers.delete(ledger.sync)
        session.state.forget_ledger(session.cluster.name, ledger.sync)
        session.state.forget_status(session.cluster.name, ledger.sync)
        removed.append(ledger.sync)
    return removed

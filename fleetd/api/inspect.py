"""What the web UI and the detail API read from the running daemon beyond the fleet state.

The fleet state holds statuses, drift and the journal. A few questions need
the live parts of the daemon, and are answered here, read-only:

* **the objects of a sync**, from the cluster worker's drift tracker (what
  the last successful reconcile applied), or from the hub's copy of the
  sync's ledger when the worker is not connected; whether each is drifted
  comes from the fleet state;
* **their health**, from one label-selected LIST per resource type through
  the worker's own client (`fleetd.reconcile.health.assess` on each item),
  at most every `HEALTH_TTL` seconds per sync, within `LIVE_TIMEOUT`;
* **the server version** of a cluster (one GET, cached `VERSION_TTL`);
* **the diff** of a sync: the daemon's own plan (`fleetd.reconcile.diff.diff_sync`),
  Secrets masked, at most `DIFFS` at a time;
* **commit details** of a revision (author, time) from the source's mirror,
  cached forever (a commit never changes).

Each answer degrades rather than fails: a disconnected cluster, a timeout
or an API error gives ``unknown`` health or no version, with the reason.
Without a daemon (`Live` is None: tests, benchmarks) only what the fleet
state knows is shown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from fleetd.daemon.revisions import Revisions
from fleetd.daemon.state import FleetState
from fleetd.daemon.worker import ClusterWorker
from fleetd.errors import FleetdError
from fleetd.kube.client import KubeClient
from fleetd.kube.discovery import Resource
from fleetd.kube.objects import LABEL_FLEET, LABEL_SYNC, ObjRef, ref_of
from fleetd.reconcile.diff import SyncDiff, diff_sync
from fleetd.reconcile.health import assess

HEALTH_TTL: Final = 2.0
VERSION_TTL: Final = 60.0
LIVE_TIMEOUT: Final = 5.0
DIFF_TIMEOUT: Final = 60.0
DIFFS: Final = 2
COMMITS: Final = 512


@runtime_checkable
class Live(Protocol):
    """The running daemon, as the web UI sees it: its workers, its source and its operator actions."""

    @property
    def workers(self) -> Mapping[str, ClusterWorker]: ...
    @property
    def revisions(self) -> Revisions: ...
    def trigger(self, cluster: str | None = None, sync: str | None = None) -> None: ...
    def suspend(self, cluster: str, sync: str | None) -> None: ...
    def resume_sync(self, cluster: str, sync: str | None) -> None: ...
    def hold(self) -> None: ...
    def resume(self) -> None: ...
    def promote(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectRow:
    """One object of a sync as the UI shows it."""

    ref: ObjRef
    version: str
    health: str
    """``current``, ``in_progress``, ``failed`` or ``unknown``."""
    health_message: str
    drift: str | None
    """Why it is drifted now; None when it matches git."""

    def to_json(self, revision: str | None) -> dict[str, Any]:
        r = self.ref
        return {
            "kind": r.kind, "group": r.group, "version": self.version, "namespace": r.namespace or None,
            "name": r.name, "health": self.health, "health_message": self.health_message,
            "drifted": self.drift is not None, "drift_reason": self.drift, "revision": revision,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Objects:
    rows: tuple[ObjectRow, ...]
    source: str
    """Where the list comes from: ``watch`` (the drift tracker), ``ledger`` (the hub's copy) or ``none``."""
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    author: str
    time: float | None


class Inspector:
    """See the module docstring. One per HTTP app."""

    def __init__(self, state: FleetState, live: Live | None) -> None:
        self.state, self.live = state, live
        self._health: dict[tuple[str, str], tuple[float, dict[ObjRef, tuple[str, str]], str | None]] = {}
        self._versions: dict[str, tuple[float, str | None]] = {}
        self._commits: dict[str, Commit | None] = {}
        self._diffs = asyncio.Semaphore(DIFFS)

    def worker(self, cluster: str) -> ClusterWorker | None:
        return self.live.workers.get(cluster) if self.live is not None else None

    # -- objects -----------------------------------------------------------------------

    async def objects(self, cluster: str, sync: str) -> Objects:
        drifted = self.state.drifted.get((cluster, sync), {})
        listed = self._listed(cluster, sync)
        if listed is None:
            return Objects((), "none", "nothing applied yet")
        source, entries = listed
        health, note = await self._healths(cluster, sync, entries)
        unknown = ("unknown", note or "not found in the cluster")
        rows = tuple(
            ObjectRow(
                ref=ref, version=version, health=health.get(ref, unknown)[0],
                health_message=health.get(ref, unknown)[1], drift=drifted.get(str(ref)),
            )
            for ref, (version, _) in sorted(entries.items())
        )  # fmt: skip
        return Objects(rows, source, note)

    def _listed(
        self, cluster: str, sync: str
    ) -> tuple[str, dict[ObjRef, tuple[str, Resource | None]]] | None:
        worker = self.worker(cluster)
        tracker = worker.drift if worker is not None else None
        if tracker is not None:
            managed: dict[ObjRef, tuple[str, Resource | None]] = {
                r: (m.resource.version, m.resource) for r, m in tracker.managed.items() if m.sync == sync
            }
            if managed:
                return "watch", managed
        ledger = self.state.ledger(cluster, sync)
        if ledger is None or not ledger.entries:
            return None
        return "ledger", {e.ref: (e.version, None) for e in ledger.entries}

    async def _healths(
        self, cluster: str, sync: str, entries: dict[ObjRef, tuple[str, Resource | None]]
    ) -> tuple[dict[ObjRef, tuple[str, str]], str | None]:
        cached = self._health.get((cluster, sync))
        if cached is not None and time.monotonic() - cached[0] < HEALTH_TTL:
            return cached[1], cached[2]
        found: dict[ObjRef, tuple[str, str]] = {}
        note: str | None = None
        worker = self.worker(cluster)
        reconciler = worker.reconciler if worker is not None else None
        if reconciler is None:
            note = "health unknown: the cluster is not connected"
        else:
            resources = {}
            for ref, (version, resource) in entries.items():
                api_version = f"{ref.group}/{version}" if ref.group else version
                resource = resource or reconciler.discovery.known(api_version, ref.kind)
                if resource is not None:
                    resources[(resource.group, resource.version, resource.plural)] = resource
            selector = f"{LABEL_FLEET}={self.state.fleet.name},{LABEL_SYNC}={sync}"
            try:
                async with asyncio.timeout(LIVE_TIMEOUT):
                    for resource in resources.values():
                        found.update(await _list_health(reconciler.client, resource, selector))
            except (FleetdError, TimeoutError) as exc:
                note = f"health unknown: {getattr(exc, 'detail', None) or 'no answer in time'}"
        self._health[(cluster, sync)] = (time.monotonic(), found, note)
        return found, note

    # -- cluster -----------------------------------------------------------------------

    async def server_version(self, cluster: str) -> str | None:
        """The spoke's ``gitVersion``, or None when it is not connected or does not answer."""
        cached = self._versions.get(cluster)
        if cached is not None and time.monotonic() - cached[0] < VERSION_TTL:
            return cached[1]
        worker = self.worker(cluster)
        reconciler = worker.reconciler if worker is not None else None
        version = None
        if reconciler is not None:
            try:
                async with asyncio.timeout(LIVE_TIMEOUT):
                    version = str((await reconciler.client.version()).get("gitVersion") or "") or None
            except (FleetdError, TimeoutError):
                version = None
        self._versions[cluster] = (time.monotonic(), version)
        return version

    def server_url(self, cluster: str) -> str | None:
        worker = self.worker(cluster)
        reconciler = worker.reconciler if worker is not None else None
        return reconciler.client.server if reconciler is not None else None

    # -- diff ----------------------------------------------------------------------------

    async def diff(self, cluster: str, sync: str) -> SyncDiff:
        """What reconciling the sync would change now, computed by the daemon's own planner."""
        worker = self.worker(cluster)
        reconciler = worker.reconciler if worker is not None else None
        if self.live is None or worker is None or reconciler is None:
            return SyncDiff(name=sync, errors=("the cluster is not connected; no diff can be computed now",))
        revision = self.state.rollout.revision_for(worker.cluster.wave)
        snapshot = self.live.revisions.snapshot(revision)
        if snapshot is None:
            return SyncDiff(name=sync, errors=("no revision is applied to this cluster's wave yet",))
        async with self._diffs:
            try:
                async with asyncio.timeout(DIFF_TIMEOUT):
                    return await diff_sync(reconciler, worker.cluster.sync(sync), snapshot)
            except (FleetdError, TimeoutError) as exc:
                return SyncDiff(name=sync, errors=(str(exc) or f"no answer within {DIFF_TIMEOUT:g}s",))

    def diff_revision(self, cluster: str) -> str | None:
        worker = self.worker(cluster)
        return self.state.rollout.revision_for(worker.cluster.wave) if worker is not None else None

    # -- revisions -----------------------------------------------------------------------

    async def commit(self, revision: str) -> Commit | None:
        if revision in self._commits:
            return self._commits[revision]
        if self.live is None:
            return None
        found = await self.live.revisions.fetcher.commit_info(revision)
        commit = Commit(found.author, found.time) if found is not None else None
        if commit is not None:
            if len(self._commits) >= COMMITS:
                self._commits.pop(next(iter(self._commits)))
            self._commits[revision] = commit
        return commit


async def _list_health(
    client: KubeClient, resource: Resource, selector: str
) -> dict[ObjRef, tuple[str, str]]:
    listed = await client.request("GET", resource.path(), query={"labelSelector": selector})
    api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
    out: dict[ObjRef, tuple[str, str]] = {}
    for item in listed.get("items") or []:
        obj = {**item, "apiVersion": api_version, "kind": resource.kind}
        health = assess(obj)
        out[ref_of(obj)] = (health.status, health.message)
    return out

"""One cluster's reconciler: render, plan, apply, prune, ledger — returning results, persisting nothing.

A `ClusterReconciler` owns everything needed to talk to one cluster for as
long as one connection lasts: the client, API discovery, the planner and
applier, the ledger store and the drift tracker, whose watch and
confirmation tasks run in a task group of the reconciler's own
(`ClusterReconciler.open`). It never writes local state: `reconcile` and
`plan` return values, and the fleet state records them.

The order of the steps in `reconcile` is the safety argument:

1. **render** (shared across clusters by the render cache) — a failure here
   stops the sync before any API call;
2. **plan** every object by dry run — an invalid object stops the sync
   before the first write;
3. **write ahead**: the spoke's ledger is widened to the union of what it
   held and what is about to be applied, *before* the first write, so a
   crash at any later point leaves every created object prunable;
4. **apply** (write what differs, in stages) — a failure stops the sync
   before pruning, and the outcome names exactly what was written;
5. **prune** the ledger's objects that are no longer rendered — only after
   a fully successful apply, only if the sync prunes;
6. **narrow** the ledger to what is applied now;
7. **health**, when the sync waits for it.

Every object is labelled with the fleet and sync that own it; pruning
refuses objects without those labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Sync
from fleetd.kube.client import KubeClient, connect
from fleetd.kube.discovery import Discovery
from fleetd.kube.objects import Entry, ObjRef, ref_of, split_api_version
from fleetd.reconcile.apply import Applier, ApplyFailed, Change, Desired
from fleetd.reconcile.desired import health_targets, hpa_targets, keep_live_paths, owned
from fleetd.reconcile.drift import DriftObserver, DriftTracker, Managed, managed_from
from fleetd.reconcile.guard import Guard, unguarded
from fleetd.reconcile.health import wait_healthy
from fleetd.reconcile.ledger import Ledger, LedgerStore
from fleetd.reconcile.outcome import Result, SyncOutcome
from fleetd.reconcile.plan import ChangeSet, Planner
from fleetd.reconcile.prune import Candidate, Pruned, candidates, prune
from fleetd.reconcile.safety import check_ledger_owner, check_reserved, check_unique, over_budget
from fleetd.render import Decrypt, RenderCache, RenderResult, plaintext_warning
from fleetd.source import Snapshot
from fleetd.util import logs

log = logging.getLogger(__name__)

#: Reconciles re-read API discovery at most this often (seconds); unknown kinds refresh it anyway.
DISCOVERY_MAX_AGE = 60.0
#: Looks up the hub's local copy of a ledger (cluster's sync -> ledger), for when the spoke lost it.
LocalLedger = Callable[[str], Ledger | None]


class StageFault(Exception):
    """An unexpected exception (a bug, or an input nothing anticipated) inside one reconcile stage."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"internal error while {stage}: {type(error).__name__}: {error}")
        self.stage, self.error = stage, error


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Name the stage of anything unexpected raised inside (fleetd's own errors pass unchanged)."""
    try:
        yield
    except (FleetdError, StageFault):
        raise
    except Exception as exc:
        raise StageFault(name, exc) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncPlan:
    """What reconciling a sync would do now, without doing it (``fleetd diff``)."""

    desired: list[Desired]
    changes: ChangeSet
    prunable: list[Candidate]
    """Ledger entries no longer rendered that prune would delete (empty if the sync does not prune)."""


class ClusterReconciler:
    """Reconciles syncs on one cluster over one connection; see the module docstring."""

    def __init__(
        self,
        *,
        fleet: str,
        cluster: Cluster,
        client: KubeClient,
        renders: RenderCache,
        decrypt: Decrypt | None = None,
        local_ledger: LocalLedger | None = None,
        on_drift: DriftObserver | None = None,
        peers: Callable[[], Collection[str]] = frozenset,
        require_encrypted: bool = False,
        guard: Guard = unguarded,
    ) -> None:
        self.fleet, self.cluster, self.client = fleet, cluster, client
        self._peers = peers
        self.require_encrypted = require_encrypted
        #: Per sync, what its last render warned about (plaintext Secrets in git).
        self.warnings: dict[str, tuple[str, ...]] = {}
        #: Asked before every write to the cluster (`fleetd.reconcile.guard`): apply, ledger, drift, prune.
        self.guard = guard
        self.renders, self.decrypt = renders, decrypt
        self._local_ledger = local_ledger or (lambda sync: None)
        self.discovery = Discovery(client)
        self.planner = Planner(client, self.discovery)
        self.applier = Applier(self.planner, guard=guard)
        self.ledgers = LedgerStore(client, fleet, guard=guard)
        #: Drift corrections wait while a sync is reconciled, and the other way round.
        self.lock = asyncio.Lock()
        self.drift = DriftTracker(
            fleet=fleet, client=client, applier=self.applier, lock=self.lock, observer=on_drift
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        fleet: str,
        cluster: Cluster,
        renders: RenderCache,
        decrypt: Decrypt | None = None,
        local_ledger: LocalLedger | None = None,
        on_drift: DriftObserver | None = None,
        peers: Callable[[], Collection[str]] = frozenset,
        require_encrypted: bool = False,
        requests: Counter[str] | None = None,
        errors: Counter[str] | None = None,
        guard: Guard = unguarded,
    ) -> AsyncIterator[ClusterReconciler]:
        """Connect, run the drift tracker in a task group of its own, and close everything on exit."""
        client = await connect(
            cluster.name, cluster.kubeconfig, cluster.context, requests=requests, errors=errors,
            credential_timeout=cluster.credential_timeout,
        )  # fmt: skip
        failure: Exception | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                reconciler = cls(
                    fleet=fleet, cluster=cluster, client=client, renders=renders, decrypt=decrypt,
                    local_ledger=local_ledger, on_drift=on_drift, peers=peers, guard=guard,
                    require_encrypted=require_encrypted,
                )  # fmt: skip
                reconciler.drift.start(tasks)
                try:
                    yield reconciler
                except Exception as exc:  # noqa: BLE001 - re-raised below, unwrapped by the task group
                    failure = exc
                finally:
                    reconciler.drift.stop()
        finally:
            await client.close()
        if failure is not None:
            raise failure

    # -- reconcile -------------------------------------------------------------

    async def reconcile(
        self, sync: Sync, snapshot: Snapshot, *, full: bool = False, allow_prune: bool = False
    ) -> SyncOutcome:
        """Run one reconcile of ``sync`` within its timeout and return how it ended.

        fleetd's own errors and unexpected ones alike become a failed outcome
        naming the stage. ``full``: dry-run every object even where the watches
        vouch. ``allow_prune``: an operator allowed a prune over the deletion budget.
        """
        with logs.bound(sync=sync.name, revision=snapshot.revision):
            return await self._bounded(sync, snapshot, full, allow_prune)

    async def _bounded(self, sync: Sync, snapshot: Snapshot, full: bool, allow_prune: bool) -> SyncOutcome:
        started = time.monotonic()
        progress = _Progress(allow_prune=allow_prune)
        try:
            async with self.lock, asyncio.timeout(sync.timeout):
                return await self._reconcile(sync, snapshot, full, started, progress)
        except TimeoutError:
            error = f"reconcile did not finish within the sync's timeout of {sync.timeout:g}s"
            return self._failed(sync, snapshot, error, started, progress)
        except StageFault as exc:
            log.error(  # noqa: TRY400 - the traceback is logged once, by the worker
                "cluster %s: sync %s: %s", self.cluster.name, sync.name, exc, exc_info=exc.error
            )
            progress.stage = exc.stage
            return self._failed(sync, snapshot, str(exc), started, progress)
        except FleetdError as exc:
            return self._failed(sync, snapshot, str(exc), started, progress)

    async def _reconcile(
        self, sync: Sync, snapshot: Snapshot, full: bool, started: float, progress: _Progress
    ) -> SyncOutcome:
        progress.stage = "render"
        with stage("rendering"):
            desired = await self.desired(sync, snapshot)
            check_reserved(desired)
            check_unique(sync.name, (d.ref for d in desired), await self._others(sync, snapshot))
        progress.stage = "ledger"
        with stage("reading the ledger"):
            previous = await self.ledgers.read(sync.name) or self._local_ledger(sync.name)
            check_ledger_owner(previous, self.cluster.name, self._peers())
        old = previous.entries if previous else frozenset()
        known = {} if full else self.drift.known_good(sync.name)
        unchanged = [known[d.ref] for d in desired if _same(d, known.get(d.ref))]
        fresh = [d for d in desired if not _same(d, known.get(d.ref))]
        progress.stage = "ledger"
        with stage("writing the ledger ahead"):
            ahead = old | {_entry(d) for d in fresh}
            if ahead != old:
                await self._record(sync, previous.revision if previous else "", ahead)
        progress.stage = "apply"
        try:
            with stage("applying"):
                changes = await self.applier.apply(fresh, wait_timeout=sync.timeout, force=sync.force)
        except ApplyFailed as exc:
            progress.written = [str(c.ref) for c in exc.written]
            raise
        current = frozenset(Entry(c.ref, c.version) for c in changes) | {
            Entry(m.desired.ref, m.resource.version) for m in unchanged
        }
        held = over_budget(
            self.cluster.name, sync, _stale(old, current), old, len(desired), snapshot.revision
        )
        held = None if progress.allow_prune or not sync.prune else held
        pruned = [] if held else await self._prune_stale(sync, old, current, progress)
        progress.stage = "ledger"
        with stage("narrowing the ledger"):
            keep = current if sync.prune and not held else current | _stale(old, current)
            ledger = await self._record(sync, snapshot.revision, keep)
        with stage("registering drift watches"):
            sources = {d.origin: d.obj for d in desired}
            self.drift.register(
                sync.name, [*managed_from(sync.name, sync.drift, changes, sources), *unchanged]
            )
        progress.stage = "health"
        if sync.wait or sync.health_checks:
            budget = max(0.1, started + sync.timeout - time.monotonic() - 0.5)
            with stage("checking health"):
                await wait_healthy(self.client, self.discovery, health_targets(sync, current), timeout=budget)
        changed = sum(c.action != "unchanged" for c in changes)
        deleted = sum(p.outcome == "deleted" for p in pruned)
        log.info(
            "cluster %s: sync %s ready at %s: %d objects, %d changed (%d checked by dry run), %d pruned",
            self.cluster.name, sync.name, snapshot.revision[:12], len(desired), changed, len(fresh), deleted,
        )  # fmt: skip
        if held:
            log.warning("cluster %s: sync %s: %s", self.cluster.name, sync.name, held)
        return SyncOutcome(
            sync=sync.name, revision=snapshot.revision, result=Result.HELD if held else Result.READY,
            objects=len(desired), changed=changed, pruned=deleted, duration=time.monotonic() - started,
            ledger=ledger, swept=not unchanged, error=held, warnings=self.warnings.get(sync.name, ()),
            refs=tuple(str(e.ref) for e in _stale(old, current)) if held else _touched(changes, pruned),
        )  # fmt: skip

    async def _prune_stale(
        self, sync: Sync, old: frozenset[Entry], current: frozenset[Entry], progress: _Progress
    ) -> list[Pruned]:
        stale = _stale(old, current)
        if not stale or not sync.prune:
            return []
        progress.stage = "prune"
        with stage("pruning"):
            pruned = await prune(
                self.client, self.discovery, stale, fleet=self.fleet, sync=sync.name, guard=self.guard
            )
        for p in pruned:
            if p.outcome == "deleted":
                log.info("cluster %s: sync %s pruned %s", self.cluster.name, sync.name, p.ref)
            elif p.outcome in ("protected", "foreign"):
                log.info(
                    "cluster %s: sync %s left %s in place (%s)",
                    self.cluster.name,
                    sync.name,
                    p.ref,
                    p.outcome,
                )
        return pruned

    def _failed(
        self, sync: Sync, snapshot: Snapshot, error: str, started: float, progress: _Progress
    ) -> SyncOutcome:
        log.warning(
            "cluster %s: sync %s failed at %s (%s): %s",
            self.cluster.name, sync.name, snapshot.revision[:12], progress.stage, error,
        )  # fmt: skip
        return SyncOutcome(
            sync=sync.name, revision=snapshot.revision, result=Result.FAILED, error=error,
            duration=time.monotonic() - started, stage=progress.stage, written=tuple(progress.written),
        )  # fmt: skip

    async def _record(self, sync: Sync, revision: str, entries: frozenset[Entry]) -> Ledger:
        ledger = Ledger(
            sync=sync.name, revision=revision, prune=sync.prune, entries=entries, cluster=self.cluster.name
        )
        await self.ledgers.write(ledger)
        return ledger

    async def _others(self, sync: Sync, snapshot: Snapshot) -> dict[str, set[ObjRef]]:
        """What the cluster's other syncs render at ``snapshot`` (shared renders; failures skipped)."""
        others: dict[str, set[ObjRef]] = {}
        for other in self.cluster.syncs:
            if other.name == sync.name or other.suspend:
                continue
            try:
                rendered = await self._render(other, snapshot)
            except FleetdError:
                continue  # that sync fails on its own, naming the problem
            others[other.name] = {self._identity(r.obj) for r in rendered.objects}
        return others

    def _identity(self, obj: dict[str, Any]) -> ObjRef:
        """The object's identity as the server will see it (namespaced objects default to ``default``)."""
        ref = ref_of(obj)
        resource = self.discovery.known(str(obj.get("apiVersion", "")), ref.kind)
        if ref.namespace or resource is None or not resource.namespaced:
            return ref
        return ObjRef(ref.group, ref.kind, "default", ref.name)

    # -- what the applier gets -------------------------------------------------------

    async def desired(self, sync: Sync, snapshot: Snapshot) -> list[Desired]:
        """The shared render of ``sync``, with ownership labels and keep-live paths for this cluster."""
        await self.discovery.refresh(if_older_than=DISCOVERY_MAX_AGE)
        rendered = await self._render(sync, snapshot)
        self.warnings[sync.name] = tuple(plaintext_warning(r) for r in rendered.plaintext_secrets)
        objs = [owned(r.obj, self.fleet, sync.name) for r in rendered.objects]
        kept = keep_live_paths(sync, objs, await hpa_targets(self.client, objs))
        return [
            Desired(obj=obj, origin=f"{r.file}#{r.document}", keep_live=kept(obj), sensitive=r.from_sops)
            for obj, r in zip(objs, rendered.objects, strict=True)
        ]

    async def _render(self, sync: Sync, snapshot: Snapshot) -> RenderResult:
        discovery = self.discovery

        def cluster_scoped(api_version: str, kind: str) -> bool:
            resource = discovery.known(api_version, kind)
            return resource is not None and not resource.namespaced

        return await self.renders.get(
            snapshot.root, snapshot.revision, sync.path, self.cluster.variables, sync.namespace,
            cluster_scoped=cluster_scoped, decrypt=self.decrypt,
            require_encrypted_secrets=self.require_encrypted,
        )  # fmt: skip

    # -- read-only planning (fleetd diff) ---------------------------------------------

    async def plan(self, sync: Sync, snapshot: Snapshot) -> SyncPlan:
        """What `reconcile` would do now: the same render and planner, no write (no kubectl adoption)."""
        desired = await self.desired(sync, snapshot)
        changes = await self.planner.change_set(desired, force=sync.force, adopt=False)
        prunable: list[Candidate] = []
        if sync.prune and not changes.errors:
            ledger = await self.ledgers.read(sync.name)
            rendered = {d.ref for d in desired}
            stale = [e for e in (ledger.entries if ledger else ()) if e.ref not in rendered]
            prunable, _ = await candidates(
                self.client, self.discovery, stale, fleet=self.fleet, sync=sync.name
            )
        return SyncPlan(desired=desired, changes=changes, prunable=prunable)

    async def identity(self) -> str:
        """The cluster's identity: its ``kube-system`` namespace's UID (the same through any kubeconfig)."""
        namespace = await self.client.request("GET", "/api/v1/namespaces/kube-system")
        uid = ((namespace or {}).get("metadata") or {}).get("uid") if isinstance(namespace, dict) else None
        if not isinstance(uid, str) or not uid:
            raise FleetdError(f"cluster {self.cluster.name}: the kube-system namespace has no uid")
        return uid

    # -- syncs that left this cluster -------------------------------------------------

    async def prune_removed_syncs(self, keep: set[str] | None = None) -> list[str]:
        """Clean up syncs this fleet once applied to the cluster but no longer assigns to it.

        ``keep``: the syncs to leave alone (default: those the cluster has); an empty
        set cleans up everything this fleet applied there (a cluster leaving the fleet).
        """
        assigned = {s.name for s in self.cluster.syncs} if keep is None else keep
        removed = []
        async with self.lock:
            for ledger in await self.ledgers.read_all():
                if ledger.sync in assigned:
                    continue
                if ledger.cluster and ledger.cluster != self.cluster.name and ledger.cluster in self._peers():
                    log.warning("cluster %s: ledger of sync %s belongs to cluster %s; left alone",
                                self.cluster.name, ledger.sync, ledger.cluster)  # fmt: skip
                    continue
                if ledger.prune:
                    pruned = await prune(
                        self.client, self.discovery, ledger.entries, fleet=self.fleet, sync=ledger.sync,
                        guard=self.guard,
                    )  # fmt: skip
                    log.info(
                        "cluster %s: sync %s was removed from this cluster: pruned %d object(s)",
                        self.cluster.name, ledger.sync, sum(p.outcome == "deleted" for p in pruned),
                    )  # fmt: skip
                await self.ledgers.delete(ledger.sync)
                removed.append(ledger.sync)
        return removed


@dataclass(slots=True)
class _Progress:
    """How far one reconcile got, for its failed outcome."""

    stage: str = "render"
    written: list[str] = field(default_factory=list)
    allow_prune: bool = False


def _touched(changes: list[Change], pruned: list[Pruned]) -> tuple[str, ...]:
    """The objects a successful reconcile wrote or deleted, for its event."""
    written = {str(c.ref) for c in changes if c.action != "unchanged"}
    return tuple(sorted(written | {str(p.ref) for p in pruned if p.outcome == "deleted"}))


def _entry(d: Desired) -> Entry:
    """The ledger entry of an object about to be applied."""
    return Entry(d.ref, split_api_version(str(d.obj.get("apiVersion", "")))[1])


def _same(d: Desired, known: Managed | None) -> bool:
    """Whether the watches already vouch that the server holds exactly this rendered object."""
    return known is not None and known.source == d.obj and known.desired.keep_live == d.keep_live


def _stale(old: frozenset[Entry], current: frozenset[Entry]) -> frozenset[Entry]:
    live_refs: set[ObjRef] = {e.ref for e in current}
    return frozenset(e for e in old if e.ref not in live_refs)

"""One worker per cluster: when to reconcile which sync, backing off alone — and the cluster's fault boundary.

A worker decides, pass after pass, which syncs are *due*: never reconciled,
a new revision, the sync's interval elapsed, a failure whose back-off
expired, or an explicit trigger. It runs due syncs in ``depends_on`` order
through its `ClusterReconciler`; a sync whose dependency is not ready at
the same revision waits and says what it waits for. Results go to the
fleet state (`fleetd.daemon.state`); the worker keeps no status of its own.

**Fault boundary.** Everything done for one cluster happens inside its
worker's `run`. Any exception — an unreachable API server, a kubeconfig
that cannot be parsed, a hand-edited ledger, or a bug — is logged once
(with its traceback when unexpected), becomes a failed status and an event
naming the cluster and sync, and backs off (exponential with jitter,
honouring a server's Retry-After). It never reaches the daemon, and the
worker reconnects from scratch afterwards.

**Time.** Scheduling uses the monotonic clock only; wall-clock time is for
display. A clock jumped back or forward moves no interval.

Isolation: the fleet-wide concurrency limit is a semaphore taken per pass,
and every wait is this worker's own, so a slow or failing cluster holds up
no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from graphlib import TopologicalSorter

from fleetd.daemon.state import FleetState
from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Sync
from fleetd.kube.client import KubeError
from fleetd.reconcile.drift import DriftTracker
from fleetd.reconcile.guard import Guard, unguarded
from fleetd.reconcile.outcome import Result, SyncOutcome
from fleetd.reconcile.reconciler import ClusterReconciler
from fleetd.render import Decrypt, RenderCache
from fleetd.source import Snapshot
from fleetd.util import logs
from fleetd.util.backoff import backoff

log = logging.getLogger(__name__)

IDLE_WAIT = 3600.0
#: A full reconcile (dry run of every object) runs at least every this many intervals, watches or not.
SWEEP_EVERY = 6


class ClusterWorker:
    """Reconciles one cluster's syncs for as long as it runs; see the module docstring."""

    def __init__(
        self,
        *,
        fleet: str,
        cluster: Cluster,
        state: FleetState,
        renders: RenderCache,
        limiter: asyncio.Semaphore,
        snapshot: Callable[[], Snapshot | None],
        decrypt: Decrypt | None = None,
        on_change: Callable[[], None] | None = None,
        guard: Guard = unguarded,
    ) -> None:
        self.fleet, self.cluster = fleet, cluster
        self._guard = guard  # every write to the cluster asks it first (`fleetd.reconcile.guard`)
        self._state, self._renders, self._limiter, self._snapshot = state, renders, limiter, snapshot
        self._decrypt = decrypt
        self._on_change = on_change or (lambda: None)
        self._wake = asyncio.Event()
        self._forced: set[str] = set()
        self._forced_now: set[str] = set()
        self._allowed: set[str] = set()  # syncs whose next reconcile may prune over the deletion budget
        self._failures = 0
        self._retry_at = 0.0  # monotonic
        self._attempted: dict[str, float] = {}  # sync -> monotonic time of its last attempt
        self._swept: dict[str, float] = {}  # sync -> monotonic time of its last full reconcile
        self._orphans: set[str] = set()  # ledgers in the spoke of syncs no longer assigned here
        self.reconciler: ClusterReconciler | None = None
        now_wall, now = time.time(), time.monotonic()
        for sync in cluster.syncs:  # restarts keep intervals: map remembered wall times once
            status = state.status(cluster.name, sync.name)
            if status is not None:
                self._attempted[sync.name] = now - max(0.0, now_wall - status.attempted_at)

    @property
    def drift(self) -> DriftTracker | None:
        """The drift tracker of the current connection (None while disconnected)."""
        return self.reconciler.drift if self.reconciler else None

    @property
    def requests(self) -> int:
        """API requests sent to this cluster since the daemon started."""
        return sum(self._state.cluster(self.cluster.name).requests.values())

    def request_totals(self) -> dict[str, int]:
        return dict(self._state.cluster(self.cluster.name).requests)

    def trigger(self, sync: str | None = None) -> None:
        """Reconcile now: one sync, or every sync of the cluster."""
        self._forced |= {sync} if sync else {s.name for s in self.cluster.syncs}
        self._retry_at = 0.0
        self._wake.set()

    def suspend(self, sync: str | None) -> None:
        """Stop applying (and correcting drift of) one sync, or the whole cluster, until resumed."""
        self._state.set_suspended(self.cluster.name, sync, True)
        if self.reconciler is not None:
            for name in [sync] if sync else [s.name for s in self.cluster.syncs]:
                self.reconciler.drift.forget(name)
        self.trigger(sync)

    def resume(self, sync: str | None) -> None:
        self._state.set_suspended(self.cluster.name, sync, False)
        self.trigger(sync)

    def allow_prune(self, sync: str) -> None:
        """Let the next reconcile of ``sync`` prune beyond its deletion budget (an operator's decision)."""
        self._allowed.add(sync)
        self.trigger(sync)

    def wake(self) -> None:
        """Re-evaluate what is due (e.g. a new revision arrived)."""
        self._wake.set()

    # -- the fault boundary ------------------------------------------------------

    async def run(self) -> None:
        """Serve the cluster until cancelled; nothing raised inside ever leaves (see the module docstring)."""
        logs.bind(cluster=self.cluster.name)  # this task's own context: every record names the cluster
        while True:
            try:
                async with self._open() as reconciler:
                    self.reconciler = reconciler
                    await self._serve(reconciler)
            except Exception as exc:  # noqa: BLE001 - the fault boundary: a bug stays in its cluster
                cause = _innermost(exc)
                self._fault(cause, unexpected=not isinstance(cause, FleetdError))
            finally:
                self.reconciler = None
            await self._sleep(max(0.05, self._retry_at - time.monotonic()))

    def _open(self) -> contextlib.AbstractAsyncContextManager[ClusterReconciler]:
        counters = self._state.cluster(self.cluster.name)
        return ClusterReconciler.open(
            fleet=self.fleet, cluster=self.cluster, renders=self._renders, decrypt=self._decrypt,
            local_ledger=lambda sync: self._state.ledger(self.cluster.name, sync), on_drift=self._drift,
            peers=self._peers, requests=counters.requests, errors=counters.errors, guard=self._guard,
            require_encrypted=self._state.fleet.decryption.require_encrypted_secrets,
        )  # fmt: skip

    def _peers(self) -> set[str]:
        """The other clusters of the inventory in force."""
        return {c.name for c in self._state.fleet.clusters} - {self.cluster.name}

    def _fault(self, exc: BaseException, *, unexpected: bool) -> None:
        """The connection ended with ``exc``: record it for the due syncs and back off."""
        name = self.cluster.name
        detail = exc.detail if isinstance(exc, KubeError) else str(exc)
        if unexpected:
            detail = f"internal error: {type(exc).__name__}: {exc}"
            log.error("cluster %s: %s", name, detail, exc_info=exc)
        self._failures += 1
        delay = max(backoff(self._failures), getattr(exc, "retry_after", None) or 0.0)
        self._retry_at = time.monotonic() + delay
        log.warning("cluster %s: %s; retrying in %.1fs", name, detail, delay, extra={"cluster": name})
        if isinstance(exc, KubeError):
            self._state.reachability(name, False, detail)
        else:
            self._state.cluster(name).last_error = detail
        snapshot = self._snapshot()
        if snapshot is None:
            return
        word = (
            "cluster unreachable" if isinstance(exc, KubeError)
            else "cluster failed" if unexpected
            else "cluster refused"
        )  # fmt: skip
        for sync in self._due(snapshot, ignore_backoff=True):
            outcome = SyncOutcome(sync=sync.name, revision=snapshot.revision, result=Result.FAILED,
                                  error=f"{word}: {detail}")  # fmt: skip
            self._record(outcome)
        self._on_change()

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    # -- passes -------------------------------------------------------------------

    async def _serve(self, reconciler: ClusterReconciler) -> None:
        verified = False
        while True:
            snapshot = self._snapshot()
            delay = IDLE_WAIT
            if snapshot is not None and not self._suspended():
                if not verified:
                    await self._verify_ledgers(reconciler)
                    verified = True
                delay = await self._pass(reconciler, snapshot)
            await self._sleep(delay)

    def _suspended(self) -> bool:
        return self.cluster.suspend or "" in self._state.suspended(self.cluster.name)

    async def _pass(self, reconciler: ClusterReconciler, snapshot: Snapshot) -> float:
        """Reconcile what is due; return seconds until something is due again."""
        due = self._due(snapshot)
        if due or self._orphans:
            async with self._limiter:
                await self._reconcile(reconciler, due, snapshot)
        return max(0.05, min((self._due_in(s, snapshot) for s in self.cluster.syncs), default=IDLE_WAIT))

    async def _reconcile(self, reconciler: ClusterReconciler, due: list[Sync], snapshot: Snapshot) -> None:
        self._forced_now = self._forced & {s.name for s in due}
        self._forced -= {s.name for s in due}
        if not all(self._vouched(reconciler, s, snapshot) for s in due):
            await reconciler.client.version()  # reachable? (raises: the fault boundary records it)
        self._state.reachability(self.cluster.name, True)
        failed = False
        for sync in due:
            outcome = await self._run_sync(reconciler, sync, snapshot)
            failed |= outcome.result == Result.FAILED
        if self._orphans:  # found when the worker connected: syncs this cluster no longer has
            await reconciler.prune_removed_syncs()
            for name in self._orphans:
                self._state.forget_sync(self.cluster.name, name)
            self._orphans = set()
        self._failures = self._failures + 1 if failed else 0
        self._retry_at = time.monotonic() + backoff(self._failures) if failed else 0.0
        self._on_change()

    async def _run_sync(self, reconciler: ClusterReconciler, sync: Sync, snapshot: Snapshot) -> SyncOutcome:
        self._attempted[sync.name] = time.monotonic()
        if sync.suspend or sync.name in self._state.suspended(self.cluster.name):
            reconciler.drift.forget(sync.name)
            return self._record(
                SyncOutcome(sync=sync.name, revision=snapshot.revision, result=Result.SUSPENDED)
            )
        blockers = [d for d in sync.depends_on if not self._ready_at(d, snapshot.revision)]
        if blockers:
            reconciler.drift.forget(sync.name)
            waits = f"waiting for {', '.join(blockers)} to be ready"
            return self._record(
                SyncOutcome(sync=sync.name, revision=snapshot.revision, result=Result.WAITING, error=waits)
            )
        if self._vouched(reconciler, sync, snapshot):
            previous = self._state.status(self.cluster.name, sync.name)
            objects = previous.objects if previous else 0
            outcome = SyncOutcome(
                sync=sync.name, revision=snapshot.revision, result=Result.READY, objects=objects
            )
            return self._record(outcome, vouched=True)
        self._state.started(self.cluster.name, sync.name, snapshot.revision)
        allow = sync.name in self._allowed
        self._allowed.discard(sync.name)
        try:
            full = sync.name in self._forced_now or self._sweep_due(sync)
            outcome = await reconciler.reconcile(sync, snapshot, full=full, allow_prune=allow)
        except Exception as exc:
            log.exception("cluster %s: sync %s: internal error", self.cluster.name, sync.name)
            outcome = SyncOutcome(sync=sync.name, revision=snapshot.revision, result=Result.FAILED,
                                  error=f"internal error: {type(exc).__name__}: {exc}")  # fmt: skip
        if outcome.result == Result.READY and outcome.swept:
            self._swept[sync.name] = time.monotonic()
        elif outcome.result != Result.READY:
            reconciler.drift.forget(sync.name)
        return self._record(outcome)

    def _record(self, outcome: SyncOutcome, *, vouched: bool = False) -> SyncOutcome:
        self._state.record(self.cluster.name, outcome, vouched=vouched)
        return outcome

    def _drift(self, sync: str, ref: str, kind: str, what: str, reason: str) -> None:
        self._state.drift(self.cluster.name, sync, ref, kind, what, reason)

    def _sweep_due(self, sync: Sync) -> bool:
        """Whether the periodic full sweep (every object dry-run, watches or not) is due for ``sync``."""
        swept = self._swept.get(sync.name)
        return swept is None or time.monotonic() - swept >= SWEEP_EVERY * sync.interval

    def _vouched(self, reconciler: ClusterReconciler, sync: Sync, snapshot: Snapshot) -> bool:
        """Whether an interval reconcile can be skipped: same revision, watches vouch, full sweep recent.

        The watches saw every change since the last full reconcile, so re-running
        the dry runs would find nothing; every ``SWEEP_EVERY`` intervals a full
        reconcile runs anyway, as the backstop behind the watches.
        """
        status = self._state.status(self.cluster.name, sync.name)
        return (
            sync.name not in self._forced_now
            and status is not None
            and status.result == Result.READY
            and status.revision == snapshot.revision
            and not self._sweep_due(sync)
            and reconciler.drift.vouches_for(sync.name)
        )

    async def _verify_ledgers(self, reconciler: ClusterReconciler) -> None:
        """On every new connection: make sure of the cluster's identity, then reconcile everything at once.

        The cluster must not be one another inventory cluster already reaches
        (its ``kube-system`` namespace's UID tells). Then every sync that has a
        status is reconciled now, not at its next interval: that checks each
        object by dry run (drift while fleetd was away is corrected) and starts
        the watches, so drift right after a restart is corrected in seconds.
        """
        uid = await reconciler.identity()
        self._state.claim_identity(self.cluster.name, uid)
        ledgers = {ledger.sync: ledger for ledger in await reconciler.ledgers.read_all()}
        assigned = {s.name for s in self.cluster.syncs}
        self._orphans = {
            name for name, ledger in ledgers.items()
            if name not in assigned and ledger.cluster in ("", self.cluster.name)
        }  # fmt: skip
        for sync in self.cluster.syncs:
            if self._state.status(self.cluster.name, sync.name) is not None:
                self._forced.add(sync.name)

    # -- scheduling ------------------------------------------------------------

    def _due(self, snapshot: Snapshot, *, ignore_backoff: bool = False) -> list[Sync]:
        ordered = self._ordered()
        if ignore_backoff:
            return [s for s in ordered if self._due_in(s, snapshot, ignore_backoff=True) <= 0]
        return [s for s in ordered if self._due_in(s, snapshot) <= 0]

    def _ordered(self) -> list[Sync]:
        graph = {s.name: set(s.depends_on) for s in self.cluster.syncs}
        order = list(TopologicalSorter(graph).static_order())
        return [self.cluster.sync(name) for name in order]

    def _ready_at(self, sync: str, revision: str) -> bool:
        status = self._state.status(self.cluster.name, sync)
        return status is not None and status.result == Result.READY and status.revision == revision

    def _due_in(self, sync: Sync, snapshot: Snapshot, *, ignore_backoff: bool = False) -> float:
        status = self._state.status(self.cluster.name, sync.name)
        if sync.name in self._forced or status is None or status.revision != snapshot.revision:
            return 0.0
        now = time.monotonic()
        if status.result in (Result.FAILED, Result.WAITING):
            return 0.0 if ignore_backoff else self._retry_at - now
        return self._attempted.get(sync.name, now - sync.interval) + sync.interval - now


def _innermost(exc: BaseException) -> BaseException:
    """The first real exception inside (task groups wrap what their body raises)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def prune_everything(
    *, fleet: str, cluster: Cluster, state: FleetState, renders: RenderCache, guard: Guard = unguarded
) -> list[str]:
    """Delete what this fleet applied to a cluster that leaves the fleet; returns the syncs pruned."""
    async with ClusterReconciler.open(
        fleet=fleet, cluster=cluster, renders=renders,
        local_ledger=lambda sync: state.ledger(cluster.name, sync), guard=guard,
    ) as reconciler:  # fmt: skip
        return await reconciler.prune_removed_syncs(keep=set())

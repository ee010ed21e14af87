"""One worker per cluster: when to reconcile which sync, and backing off alone.

A worker owns its cluster's connection and decides, pass after pass, which
syncs are *due*: never reconciled, a new revision, the sync's interval
elapsed, a failure whose back-off expired, or an explicit trigger. It runs
due syncs in ``depends_on`` order; a sync whose dependency is not ready at
the same revision waits and says what it waits for.

Isolation: the fleet-wide concurrency limit is a semaphore taken per pass,
and every wait is this worker's own — an unreachable, slow or forbidden
cluster backs off (exponential with jitter, capped) without holding up any
other worker. Statuses are persisted, so after a restart a sync that is up
to date waits for its interval instead of being reconciled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from graphlib import TopologicalSorter

from fleetd.daemon.store import StateStore, SyncStatus
from fleetd.inventory import Cluster, Sync
from fleetd.kube.client import KubeClient, KubeError, connect
from fleetd.kube.discovery import Discovery
from fleetd.reconcile.apply import Applier
from fleetd.reconcile.drift import DriftObserver, DriftTracker
from fleetd.reconcile.ledger import LedgerStore
from fleetd.reconcile.sync import ClusterSession, prune_removed_syncs, reconcile_sync
from fleetd.render import Decrypt, RenderCache
from fleetd.source.git import Snapshot
from fleetd.util.backoff import backoff

log = logging.getLogger(__name__)

IDLE_WAIT = 3600.0
#: A full reconcile (dry run of every object) runs at least every this many intervals, watches or not.
SWEEP_EVERY = 6


class ClusterWorker:
    """Reconciles one cluster's syncs for as long as it runs."""

    def __init__(
        self,
        *,
        fleet: str,
        cluster: Cluster,
        state: StateStore,
        renders: RenderCache,
        limiter: asyncio.Semaphore,
        snapshot: Callable[[], Snapshot | None],
        decrypt: Decrypt | None = None,
        on_status: Callable[[SyncStatus], None] | None = None,
        on_drift: DriftObserver | None = None,
    ) -> None:
        self.fleet, self.cluster = fleet, cluster
        self._state, self._renders, self._limiter, self._snapshot = state, renders, limiter, snapshot
        self._decrypt = decrypt
        self._on_status, self._on_drift = on_status, on_drift
        self._wake = asyncio.Event()
        self._forced: set[str] = set()
        self._failures = 0
        self._retry_at = 0.0
        self._verified = False
        self._orphans: set[str] = set()  # ledgers in the spoke of syncs no longer assigned here
        self._forced_now: set[str] = set()
        self._swept: dict[str, float] = {}
        self._past_requests: Counter[str] = Counter()  # of connections dropped since start
        self._past_errors: Counter[str] = Counter()  # sync -> monotonic time of its last full reconcile
        self._session: ClusterSession | None = None
        self._closing: asyncio.Task[None] | None = None
        self.statuses: dict[str, SyncStatus] = {
            s.sync: s for s in state.statuses() if s.cluster == cluster.name
        }
        self.suspended: set[str] = state.suspensions(cluster.name)  # by command; "" = whole cluster
        self.reachable: bool | None = None
        self.last_error: str | None = None

    @property
    def drift(self) -> DriftTracker | None:
        """The drift tracker of the current connection (None while disconnected)."""
        return self._session.drift if self._session else None

    @property
    def requests(self) -> int:
        """API requests sent to this cluster over the current connection."""
        return sum(self.request_totals().values())

    def request_totals(self) -> dict[str, int]:
        """API requests since the worker started, by method (all connections)."""
        current = self._session.client.requests if self._session else Counter[str]()
        return dict(self._past_requests + current)

    def error_totals(self) -> dict[str, int]:
        """Failed API requests since the worker started, by kind (all connections)."""
        current = self._session.client.errors if self._session else Counter[str]()
        return dict(self._past_errors + current)

    def trigger(self, sync: str | None = None) -> None:
        """Reconcile now: one sync, or every sync of the cluster."""
        self._forced |= {sync} if sync else {s.name for s in self.cluster.syncs}
        self._wake.set()

    def suspend(self, sync: str | None) -> None:
        """Stop applying (and correcting drift of) one sync, or the whole cluster, until resumed."""
        key = sync or ""
        self.suspended.add(key)
        self._state.set_suspended(self.cluster.name, key, True)
        if self._session is not None:
            for name in [sync] if sync else [s.name for s in self.cluster.syncs]:
                self._session.drift.forget(name)
        self.trigger(sync)

    def resume(self, sync: str | None) -> None:
        key = sync or ""
        self.suspended.discard(key)
        self._state.set_suspended(self.cluster.name, key, False)
        self.trigger(sync)

    async def prune_everything(self) -> list[str]:
        """Delete what this fleet applied to the cluster (it leaves the fleet); the worker must be stopped."""
        client = await connect(self.cluster.name, self.cluster.kubeconfig, self.cluster.context)
        session = new_session(self.fleet, self.cluster, client, self._state, self._renders, None)
        try:
            return await prune_removed_syncs(session, keep=set())
        finally:
            await client.close()

    def wake(self) -> None:
        """Re-evaluate what is due (e.g. a new revision arrived)."""
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                delay = await self.run_pass()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await _close(session)

    # -- one pass ------------------------------------------------------------

    async def run_pass(self) -> float:
        """Reconcile what is due; return seconds until something is due again."""
        snapshot = self._snapshot()
        if snapshot is None or self.cluster.suspend or "" in self.suspended:
            return IDLE_WAIT
        if not self._verified:
            await self._verify_ledgers()
        due = [s for s in self._ordered() if self._due_in(s, snapshot) <= 0]
        if due or self._orphans:
            async with self._limiter:
                await self._reconcile(due, snapshot)
        return max(0.05, min((self._due_in(s, snapshot) for s in self.cluster.syncs), default=IDLE_WAIT))

    async def _reconcile(self, due: list[Sync], snapshot: Snapshot) -> None:
        self._forced_now = self._forced & {s.name for s in due}
        self._forced -= {s.name for s in due}
        try:
            session = await self._connect()
            if not all(self._watched_and_current(session, s, snapshot) for s in due):
                await session.client.version()  # reachable? (the watches already say so for vouched syncs)
        except KubeError as exc:
            self._unreachable(due, snapshot, exc)
            return
        self.reachable, self.last_error = True, None
        failed = False
        async with session.lock:  # drift corrections wait while the cluster is reconciled
            for sync in due:
                status = await self._run_sync(session, sync, snapshot)
                self._set_status(status)
                failed |= status.result == "failed"
            if self._orphans:  # found when the worker started: syncs this cluster no longer has
                with contextlib.suppress(KubeError):
                    await prune_removed_syncs(session)
                    self._orphans = set()
        self._failures = self._failures + 1 if failed else 0
        self._retry_at = time.time() + backoff(self._failures) if failed else 0.0

    async def _run_sync(self, session: ClusterSession, sync: Sync, snapshot: Snapshot) -> SyncStatus:
        if sync.suspend or sync.name in self.suspended:
            session.drift.forget(sync.name)
            return self._record(sync, snapshot, "suspended", None)
        blockers = [d for d in sync.depends_on if not self._ready_at(d, snapshot.revision)]
        if blockers:
            session.drift.forget(sync.name)
            return self._record(sync, snapshot, "waiting", f"waiting for {', '.join(blockers)} to be ready")
        if self._watched_and_current(session, sync, snapshot):
            return self._record(sync, snapshot, "ready", None, vouched=True)
        status = await reconcile_sync(session, sync, snapshot, full=sync.name in self._forced_now)
        if status.result == "ready":
            self._swept[sync.name] = time.monotonic()
        else:
            session.drift.forget(sync.name)
        return status

    def _watched_and_current(self, session: ClusterSession, sync: Sync, snapshot: Snapshot) -> bool:
        """Whether an interval reconcile can be skipped: same revision, watches vouch, full sweep recent.

        The watches saw every change since the last full reconcile, so re-running
        the dry runs would find nothing; every ``SWEEP_EVERY`` intervals a full
        reconcile runs anyway, as the backstop behind the watches.
        """
        status = self.statuses.get(sync.name)
        swept = self._swept.get(sync.name)
        return (
            sync.name not in self._forced_now
            and status is not None
            and status.result == "ready"
            and status.revision == snapshot.revision
            and swept is not None
            and time.monotonic() - swept < SWEEP_EVERY * sync.interval
            and session.drift.vouches_for(sync.name)
        )

    async def _verify_ledgers(self) -> None:
        """After a (re)start, distrust remembered statuses the cluster itself does not confirm.

        A sync recorded as ready whose ledger is missing in the spoke, or names
        another revision (a rebuilt cluster, another hub), is reconciled now
        instead of at its next interval.
        """
        try:
            session = await self._connect()
            ledgers = {ledger.sync: ledger for ledger in await session.ledgers.read_all()}
        except KubeError:
            return  # unreachable: the normal schedule and back-off apply
        self._verified = True
        self._orphans = set(ledgers) - {s.name for s in self.cluster.syncs}
        for name, status in self.statuses.items():
            ledger = ledgers.get(name)
            if status.result == "ready" and (ledger is None or ledger.revision != status.revision):
                self._forced.add(name)

    def _unreachable(self, due: list[Sync], snapshot: Snapshot, exc: KubeError) -> None:
        self.reachable, self.last_error = False, exc.detail
        self._failures += 1
        delay = backoff(self._failures)
        self._retry_at = time.time() + delay
        fields = {"cluster": self.cluster.name}
        log.warning("cluster %s: %s; retrying in %.1fs", self.cluster.name, exc.detail, delay, extra=fields)
        for sync in due:
            self._set_status(self._record(sync, snapshot, "failed", f"cluster unreachable: {exc.detail}"))
        stale, self._session = self._session, None
        if stale is not None:  # reconnect from scratch next time; close in the background
            self._past_requests += stale.client.requests
            self._past_errors += stale.client.errors
            self._closing = asyncio.get_running_loop().create_task(_close(stale))

    def _set_status(self, status: SyncStatus) -> None:
        self.statuses[status.sync] = status
        if self._on_status is not None:
            self._on_status(status)

    def _record(
        self, sync: Sync, snapshot: Snapshot, result: str, error: str | None, *, vouched: bool = False
    ) -> SyncStatus:
        previous = self.statuses.get(sync.name)
        now = time.time()
        status = SyncStatus(
            cluster=self.cluster.name, sync=sync.name, revision=snapshot.revision, result=result, error=error,
            objects=previous.objects if previous else 0, attempted_at=now,
            succeeded_at=now if vouched else None,
        )  # fmt: skip
        self._state.save_status(status)
        return status

    # -- scheduling ------------------------------------------------------------

    def _ordered(self) -> list[Sync]:
        graph = {s.name: set(s.depends_on) for s in self.cluster.syncs}
        order = list(TopologicalSorter(graph).static_order())
        return [self.cluster.sync(name) for name in order]

    def _ready_at(self, sync: str, revision: str) -> bool:
        status = self.statuses.get(sync)
        return status is not None and status.result == "ready" and status.revision == revision

    def _due_in(self, sync: Sync, snapshot: Snapshot) -> float:
        status = self.statuses.get(sync.name)
        if sync.name in self._forced or status is None or status.revision != snapshot.revision:
            return 0.0
        if status.result in ("failed", "waiting"):
            return self._retry_at - time.time()
        return status.attempted_at + sync.interval - time.time()

    async def _connect(self) -> ClusterSession:
        if self._session is None:
            client = await connect(self.cluster.name, self.cluster.kubeconfig, self.cluster.context)
            session = new_session(
                self.fleet, self.cluster, client, self._state, self._renders, self._on_drift
            )
            session.decrypt = self._decrypt
            session.drift_task = asyncio.get_running_loop().create_task(
                session.drift.run(), name=f"drift/{self.cluster.name}"
            )
            self._session = session
        return self._session


def new_session(
    fleet: str,
    cluster: Cluster,
    client: KubeClient,
    state: StateStore,
    renders: RenderCache,
    on_drift: DriftObserver | None,
) -> ClusterSession:
    discovery = Discovery(client)
    applier = Applier(client, discovery)
    lock = asyncio.Lock()
    return ClusterSession(
        fleet=fleet,
        cluster=cluster,
        client=client,
        discovery=discovery,
        applier=applier,
        ledgers=LedgerStore(client, fleet),
        state=state,
        renders=renders,
        drift=DriftTracker(fleet=fleet, client=client, applier=applier, lock=lock, observer=on_drift),
        lock=lock,
    )


async def _close(session: ClusterSession) -> None:
    """Stop the session's watches and close its connections."""
    if session.drift_task is not None:
        session.drift_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await session.drift_task
    await session.client.close()

"""FleetState: the one writer of what the fleet looks like, and the one place every surface reads.

Workers, the source loop, reload and operator commands *report* to the
fleet state; they never keep status of their own. The state:

* keeps the latest `SyncStatus` of every (cluster, sync), each cluster's
  reachability, the objects drifted now, request and error counters per
  cluster, and the rollout gates (`fleetd.daemon.rollout`);
* persists statuses, suspensions and the rollout to SQLite
  (`fleetd.daemon.store`), so restarts and ``fleetd status`` see them;
* turns every change into a typed `Event`, appended to the journal and
  published on the bus;
* when replicas share the fleet (`fleetd.shard`), keeps what this replica
  owns and sees of the others (`ShardState`); statuses, metrics and rollout
  gates then cover the clusters it owns.

Metrics, the status API, the control socket, the web UI and MCP read it.

A state directory that cannot be written (full disk, read-only, removed)
does not stop anything: the state keeps serving from memory, records a
``state.unrecorded`` event, reports itself not ready (``/readyz`` 503 with
the reason) and goes back to recording, with a ``state.recorded`` event, on
the first write that succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fleetd.daemon.events import Event, EventBus, EventKind, Severity
from fleetd.daemon.rollout import Position, Rollout
from fleetd.daemon.store import StateStore, StoreError, SyncStatus
from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Fleet
from fleetd.reconcile.ledger import Ledger
from fleetd.reconcile.outcome import Result, SyncOutcome
from fleetd.source import DiskUsage

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Seconds between attempts to write to a state directory that failed (full, read-only, gone).
STORE_RETRY = 5.0
RECONCILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds: a no-op reconcile of a small sync up to the default sync timeout (5m)."""
FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""Seconds: a fetch that finds nothing new up to twice the default source timeout."""


@dataclass(slots=True)
class Histogram:
    """Cumulative bucket counts, as Prometheus histograms expose them."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class ClusterState:
    """What the fleet knows about one cluster's connection."""

    reachable: bool | None = None
    last_error: str | None = None
    requests: Counter[str] = field(default_factory=Counter)
    """API requests by method; the cluster's client counts into this very counter."""
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class SourceState:
    revision: str | None = None
    ref: str | None = None
    message: str | None = None
    last_error: str | None = None
    last_fetch: float | None = None
    disk: DiskUsage | None = None


@dataclass(slots=True)
class ShardState:
    """This replica's part in a sharded fleet, as the coordinator reports it."""

    identity: str
    member: bool = False
    error: str | None = None
    owned: set[str] = field(default_factory=set)
    live: set[str] = field(default_factory=set)
    """Replicas whose membership Lease this replica saw renewed within a lease duration."""
    gone: set[str] = field(default_factory=set)
    """Replicas with a membership Lease that is no longer renewed."""
    holders: dict[str, str] = field(default_factory=dict)
    """Cluster -> the replica holding its Lease."""
    assigned: dict[str, str | None] = field(default_factory=dict)
    """Cluster -> the replica rendezvous hashing gives it to (None: no eligible replica is live)."""
    renew_failures: int = 0
    handoffs: Counter[str] = field(default_factory=Counter)
    """Clusters acquired, released and lost."""
    requests: Counter[str] = field(default_factory=Counter)
    """Requests to the management cluster by method; its client counts into this very counter."""


class FleetState:
    """See the module docstring. One per daemon; not thread-safe (the event loop's own)."""

    def __init__(self, fleet: Fleet, store: StateStore, bus: EventBus | None = None) -> None:
        self.fleet = fleet
        self.store = store
        self.bus = bus or EventBus()
        self.statuses: dict[tuple[str, str], SyncStatus] = {}
        self.clusters: dict[str, ClusterState] = {}
        self.drifted: dict[tuple[str, str], dict[str, str]] = {}
        #: Per (cluster, sync), what its last render warned about (not persisted: the next reconcile says).
        self.warnings: dict[tuple[str, str], tuple[str, ...]] = {}
        self.source = SourceState()
        self.recording_error: str | None = None
        self.inventory_error: str | None = None
        # Counters and histograms the metrics collector reads at scrape time.
        self.reconciles: Counter[tuple[str, str, str]] = Counter()
        self.drift_events: Counter[tuple[str, str, str]] = Counter()
        self.corrections: Counter[tuple[str, str, str]] = Counter()
        self.webhooks: Counter[tuple[str, str]] = Counter()
        #: Notification deliveries by (notification, result): sent, failed, suppressed (`fleetd.notify`).
        self.notifications: Counter[tuple[str, str]] = Counter()
        self.durations: dict[tuple[str, str], Histogram] = {}
        self.fetches: dict[str, Histogram] = {}
        self._suspended: dict[str, set[str]] = {}
        self._halted_at: int | None = None
        self._store_retry_at = 0.0
        #: Cluster -> the UID of its kube-system namespace, as first seen.
        self.identities: dict[str, str] = self._read(store.identities, {})
        statuses: list[SyncStatus] = self._read(store.statuses, [])
        self.statuses = {(s.cluster, s.sync): s for s in statuses}
        #: The revision each sync last applied successfully (kept while later attempts fail).
        self.applied: dict[tuple[str, str], str] = {
            (s.cluster, s.sync): s.revision for s in statuses if s.result == Result.READY
        }
        self.shard = ShardState(fleet.sharding.identity) if fleet.sharding else None
        self.rollout = Rollout((c.wave for c in fleet.clusters), self._read(store.rollout, {}),
                               held=self._read(lambda: store.flag("rollout_held"), False))  # fmt: skip

    # -- reading ---------------------------------------------------------------

    def status(self, cluster: str, sync: str) -> SyncStatus | None:
        return self.statuses.get((cluster, sync))

    def cluster(self, name: str) -> ClusterState:
        return self.clusters.setdefault(name, ClusterState())

    def suspended(self, cluster: str) -> set[str]:
        """Syncs of ``cluster`` suspended by command (``""``: the whole cluster)."""
        if cluster not in self._suspended:
            self._suspended[cluster] = self._read(lambda: self.store.suspensions(cluster), set())
        return self._suspended[cluster]

    def owns(self, cluster: str) -> bool:
        """Whether this replica serves ``cluster`` now (always, unless replicas share the fleet)."""
        return self.shard is None or cluster in self.shard.owned

    def owner_of(self, cluster: str) -> str | None:
        """When replicas share the fleet: the replica serving ``cluster`` now, as far as this one knows."""
        if self.shard is None:
            return None
        return self.shard.identity if self.owns(cluster) else self.shard.holders.get(cluster)

    def drifted_count(self, cluster: str, sync: str) -> int:
        return len(self.drifted.get((cluster, sync), {}))

    def ledger(self, cluster: str, sync: str) -> Ledger | None:
        """The hub's copy of a sync's ledger (for when the spoke lost its own)."""
        return self._read(lambda: self.store.ledger(cluster, sync), None)

    def ready(self) -> tuple[bool, str]:
        """For ``/readyz``: the source fetched once and the state directory recording."""
        if self.source.revision is None:
            error = self.source.last_error
            return False, f"source not fetched yet{': ' + error if error else ''}"
        if self.recording_error is not None:
            self._write(
                lambda: self.store.set_flag("recording_probe", True)
            )  # retried at most every STORE_RETRY
        if self.recording_error is not None:
            return False, self.recording_error
        return True, "ok"

    def position(self) -> Position:
        return self.rollout.position(self._failing)

    def events(self, **filters: Any) -> list[Event]:
        """Journal events (see `StateStore.events` for the filters); empty when it cannot be read."""
        return self._read(lambda: self.store.events(**filters), [])

    # -- sync results ------------------------------------------------------------

    def started(self, cluster: str, sync: str, revision: str) -> None:
        self.emit(Event(kind=EventKind.RECONCILE_STARTED, cluster=cluster, sync=sync, revision=revision,
                        message=f"reconciling {sync} at {revision[:12]}"))  # fmt: skip

    def record(self, cluster: str, outcome: SyncOutcome, *, vouched: bool = False) -> SyncStatus:
        """Record how one reconcile (or a decision not to run one) ended; returns the new status.

        ``vouched``: the watches vouch for the sync, so no reconcile ran and it counts as ready now.
        """
        previous = self.statuses.get((cluster, outcome.sync))
        now = time.time()
        ready = outcome.result in (Result.READY, Result.HELD)
        written = outcome.written
        if not ready and previous is not None and previous.result == Result.FAILED:
            written = tuple(dict.fromkeys((*previous.written, *written)))  # kept until converged
        status = SyncStatus(
            cluster=cluster, sync=outcome.sync, revision=outcome.revision, result=outcome.result,
            objects=outcome.objects if outcome.result == Result.READY or not previous else previous.objects,
            changed=outcome.changed, pruned=outcome.pruned, error=_with_written(outcome.error, written),
            attempted_at=now,
            succeeded_at=now if ready or vouched else (previous.succeeded_at if previous else None),
            duration=outcome.duration, written=written,
        )  # fmt: skip
        self.statuses[(cluster, outcome.sync)] = status
        if not vouched and outcome.result in (Result.READY, Result.HELD):
            self.warnings[(cluster, outcome.sync)] = outcome.warnings
        if outcome.result == Result.READY:
            self.applied[(cluster, outcome.sync)] = outcome.revision
        self._write(lambda: self.store.save_status(status))
        if outcome.ledger is not None:
            ledger = outcome.ledger
            self._write(lambda: self.store.save_ledger(cluster, ledger))
        if not vouched:
            self.reconciles[(cluster, outcome.sync, str(outcome.result))] += 1
            if outcome.duration > 0:
                self.durations.setdefault((cluster, outcome.sync), Histogram(RECONCILE_BUCKETS)).observe(
                    outcome.duration
                )
            self._emit_outcome(cluster, outcome, previous)
        return status

    def _emit_outcome(self, cluster: str, outcome: SyncOutcome, previous: SyncStatus | None) -> None:
        def emit(kind: EventKind, message: str, severity: Severity = Severity.INFO) -> None:
            self.emit(Event(kind=kind, severity=severity, cluster=cluster, sync=outcome.sync,
                            revision=outcome.revision, message=message, objects=outcome.refs))  # fmt: skip

        if outcome.result == Result.READY:
            counts = f"{outcome.objects} objects, {outcome.changed} changed, {outcome.pruned} pruned"
            emit(EventKind.RECONCILE_SUCCEEDED, counts)
            if outcome.pruned:
                emit(EventKind.OBJECTS_PRUNED, f"{outcome.pruned} object(s) pruned")
        elif outcome.result == Result.FAILED:
            emit(EventKind.RECONCILE_FAILED, outcome.error or "failed", Severity.ERROR)
        elif outcome.result == Result.HELD:
            emit(EventKind.PRUNE_HELD, outcome.error or "prune held", Severity.WARNING)
        elif previous is None or previous.result != outcome.result:
            kind = EventKind.SYNC_WAITING if outcome.result == Result.WAITING else EventKind.SYNC_SUSPENDED
            emit(kind, outcome.error or str(outcome.result))

    def forget_sync(self, cluster: str, sync: str) -> None:
        self.statuses.pop((cluster, sync), None)
        self.drifted.pop((cluster, sync), None)
        self._write(lambda: self.store.forget_status(cluster, sync))
        self._write(lambda: self.store.forget_ledger(cluster, sync))

    def forget_cluster(self, cluster: str) -> None:
        for key in [k for k in self.statuses if k[0] == cluster]:
            self.statuses.pop(key)
        self.clusters.pop(cluster, None)
        self.drifted = {k: v for k, v in self.drifted.items() if k[0] != cluster}

    # -- clusters ---------------------------------------------------------------

    def reachability(self, cluster: str, reachable: bool, error: str | None = None) -> None:
        state = self.cluster(cluster)
        before = state.reachable
        state.reachable, state.last_error = reachable, error
        if not reachable and before is not False:
            self.emit(Event(kind=EventKind.CLUSTER_UNREACHABLE, severity=Severity.ERROR, cluster=cluster,
                            message=error or "unreachable"))  # fmt: skip
        elif reachable and before is False:
            self.emit(Event(kind=EventKind.CLUSTER_RECOVERED, cluster=cluster, message="reachable again"))

    def claim_identity(self, cluster: str, uid: str) -> None:
        """Record that ``cluster`` is the cluster ``uid``; refuse it if another inventory cluster is.

        The first cluster of the inventory to reach an API server keeps it;
        a second cluster file pointing there is refused (`IdentityConflict`)
        and nothing is applied or pruned through it.
        """
        names = {c.name for c in self.fleet.clusters}
        holder = next(
            (n for n, u in self.identities.items() if u == uid and n != cluster and n in names), None
        )
        if holder is not None:
            raise IdentityConflict(
                f"cluster {cluster} is the same Kubernetes cluster as {holder} (kube-system namespace uid "
                f"{uid}): two cluster files point at one API server. Remove one of them; nothing is "
                f"applied or pruned through {cluster} until then"
            )
        if self.identities.get(cluster) != uid:
            self.identities[cluster] = uid
            self._write(lambda: self.store.save_identity(cluster, uid))

    # -- drift -------------------------------------------------------------------

    def drift(self, cluster: str, sync: str, ref: str, kind: str, what: str, reason: str) -> None:
        """One drift notice from a cluster's tracker: corrected, reported, failed or cleared."""
        drifted = self.drifted.setdefault((cluster, sync), {})

        def emit(kind: EventKind, message: str, severity: Severity = Severity.INFO) -> None:
            self.emit(Event(kind=kind, severity=severity, cluster=cluster, sync=sync, message=message,
                            objects=(ref,)))  # fmt: skip

        if what == "cleared":
            drifted.pop(ref, None)
            return
        self.drift_events[(cluster, sync, kind)] += 1
        if what == "corrected":
            drifted.pop(ref, None)
            self.corrections[(cluster, sync, kind)] += 1
            emit(EventKind.DRIFT_CORRECTED, f"{ref}: {reason}; corrected")
            return
        drifted[ref] = reason
        detected = EventKind.DRIFT_REPORTED if what == "reported" else EventKind.DRIFT_DETECTED
        emit(detected, f"{ref}: {reason}", Severity.WARNING)

    # -- operator actions ------------------------------------------------------------

    def set_suspended(self, cluster: str, sync: str | None, suspended: bool) -> None:
        key = sync or ""
        (self.suspended(cluster).add if suspended else self.suspended(cluster).discard)(key)
        self._write(lambda: self.store.set_suspended(cluster, key, suspended))
        verb = "suspended" if suspended else "resumed"
        self.operator(f"{cluster}{'/' + sync if sync else ''} {verb}", cluster=cluster, sync=sync)

    def operator(self, message: str, *, cluster: str | None = None, sync: str | None = None) -> None:
        self.emit(Event(kind=EventKind.OPERATOR_ACTION, cluster=cluster, sync=sync, message=message))

    # -- rollout ------------------------------------------------------------------

    def advance(self, target: str) -> list[int]:
        """Let waves take ``target`` as far as health allows; returns the waves that moved now."""
        moved = self.rollout.advance(target, self._healthy)
        for wave in moved:
            self._save_rollout(wave, target)
            self.emit(Event(kind=EventKind.ROLLOUT_ADVANCED, revision=target,
                            message=f"wave {wave} now applies {target[:12]}"))  # fmt: skip
        position = self.position()
        if position.halted_at is not None and position.halted_at != self._halted_at:
            message = f"wave {position.halted_at} failed at {target[:12]}; later waves wait"
            self.emit(
                Event(
                    kind=EventKind.ROLLOUT_HALTED, severity=Severity.ERROR, revision=target, message=message
                )
            )
        self._halted_at = position.halted_at
        return moved

    def _save_rollout(self, wave: int, revision: str) -> None:
        self._write(lambda: self.store.save_rollout(wave, revision))

    def hold(self) -> None:
        self.rollout.hold()
        self._write(lambda: self.store.set_flag("rollout_held", True))
        self.emit(Event(kind=EventKind.ROLLOUT_HELD, message="rollout held by an operator"))

    def resume_rollout(self) -> None:
        self.rollout.resume()
        self._write(lambda: self.store.set_flag("rollout_held", False))
        self.emit(Event(kind=EventKind.ROLLOUT_RESUMED, message="rollout resumed by an operator"))

    def promote(self) -> None:
        self.rollout.promote()
        self.emit(Event(kind=EventKind.ROLLOUT_PROMOTED, message="next wave promoted by an operator"))

    def forget_wave_revision(self, wave: int) -> None:
        self.rollout.allowed.pop(wave, None)

    def _healthy(self, wave: int, revision: str) -> bool:
        return all(
            (st := self.statuses.get((c.name, s.name))) is not None
            and st.result == Result.READY
            and st.revision == revision
            for c in self._wave(wave)
            for s in c.syncs
            if not s.suspend
        )

    def _failing(self, wave: int, revision: str) -> bool:
        names = {c.name for c in self._wave(wave)}
        return any(
            st.result == Result.FAILED and st.revision == revision
            for (cluster, _), st in self.statuses.items()
            if cluster in names
        )

    def _wave(self, wave: int) -> list[Cluster]:
        return [
            c
            for c in self.fleet.clusters
            if c.wave == wave and not c.suspend and "" not in self.suspended(c.name) and self.owns(c.name)
        ]

    # -- source and inventory -------------------------------------------------------------

    def fetched(self, seconds: float, *, revision: str | None, ref: str | None, message: str | None) -> None:
        self.fetches.setdefault("ok", Histogram(FETCH_BUCKETS)).observe(seconds)
        self.source.last_fetch, self.source.last_error = time.time(), None
        if revision is not None and revision != self.source.revision:
            self.source.revision, self.source.ref, self.source.message = revision, ref, message
            text = f"new revision {revision[:12]} ({ref}): {message or ''}".rstrip(": ")
            self.emit(Event(kind=EventKind.SOURCE_REVISION, revision=revision, message=text))

    def fetch_failed(self, seconds: float, error: str) -> None:
        self.fetches.setdefault("failed", Histogram(FETCH_BUCKETS)).observe(seconds)
        if error != self.source.last_error:
            self.emit(Event(kind=EventKind.SOURCE_FAILED, severity=Severity.ERROR, message=error))
        self.source.last_error = error

    def inventory(self, fleet: Fleet | None, error: str | None) -> None:
        """A reload attempt: the new inventory in force (``fleet``), or why it was rejected (``error``)."""
        self.inventory_error = error
        if fleet is None:
            self.emit(Event(kind=EventKind.INVENTORY_REJECTED, severity=Severity.ERROR,
                            message=f"inventory rejected, the last good one stays: {error}"))  # fmt: skip
            return
        self.fleet = fleet
        self.rollout.set_waves(c.wave for c in fleet.clusters)

    def source_disk(self) -> DiskUsage | None:
        """Disk use of the source, as its fetcher measured it last."""
        return self.source.disk

    def webhook(self, receiver: str, result: str) -> None:
        self.webhooks[(receiver, result)] += 1

    # -- sharding (`fleetd.shard`) ------------------------------------------------------

    def shard_member(self, member: bool, error: str | None) -> None:
        """This replica joined (or lost) the fleet's replicas; ``error`` says why not."""
        shard = self._sharded()
        if member != shard.member:
            message = "joined the fleet's replicas" if member else f"no longer a member: {error}"
            severity = Severity.INFO if member else Severity.WARNING
            self.emit(Event(kind=EventKind.SHARD_MEMBERSHIP, severity=severity,
                            message=f"replica {shard.identity} {message}"))  # fmt: skip
        shard.member, shard.error = member, error

    def shard_renew_failed(self, error: str) -> None:
        self._sharded().renew_failures += 1

    def shard_gained(self, cluster: str, previous: str | None) -> None:
        shard = self._sharded()
        shard.owned.add(cluster)
        shard.handoffs["acquired"] += 1
        taken = f" from replica {previous}, which is gone" if previous else ""
        self.emit(Event(kind=EventKind.SHARD_ACQUIRED, cluster=cluster,
                        message=f"replica {shard.identity} serves {cluster} now{taken}"))  # fmt: skip

    def shard_released(self, cluster: str, to: str | None) -> None:
        shard = self._sharded()
        shard.owned.discard(cluster)
        shard.handoffs["released"] += 1
        message = f"replica {shard.identity} handed {cluster} over to {to or 'nobody'}"
        self.emit(Event(kind=EventKind.SHARD_RELEASED, cluster=cluster, message=message))

    def shard_lost(self, cluster: str, reason: str) -> None:
        shard = self._sharded()
        shard.owned.discard(cluster)
        shard.handoffs["lost"] += 1
        message = f"replica {shard.identity} stopped writing to {cluster}: {reason}"
        self.emit(Event(kind=EventKind.SHARD_LOST, severity=Severity.WARNING,
                        cluster=cluster, message=message))  # fmt: skip

    def shard_seen(
        self, *, owned: AbstractSet[str], live: AbstractSet[str], gone: AbstractSet[str],
        holders: Mapping[str, str], assigned: Mapping[str, str | None],
    ) -> None:  # fmt: skip
        """What the coordinator sees now: owned clusters, live and gone replicas, holders, assignment."""
        shard = self._sharded()
        shard.owned, shard.live, shard.gone = set(owned), set(live), set(gone)
        shard.holders, shard.assigned = dict(holders), dict(assigned)

    def _sharded(self) -> ShardState:
        if self.shard is None:  # only a daemon with [fleet.sharding] runs a coordinator
            raise FleetdError("shard state reported for a fleet without [fleet.sharding]")
        return self.shard

    # -- recording ---------------------------------------------------------------------

    def emit(self, event: Event) -> Event:
        """Journal ``event`` (when the state directory allows) and publish it."""
        recorded = self._write(lambda: self.store.append_event(event)) or event
        self.bus.publish(recorded)
        return recorded

    def _write(self, action: Callable[[], _T], default: _T | None = None) -> _T | None:
        if self.recording_error is not None and time.monotonic() < self._store_retry_at:
            return default  # a broken disk is not asked again on every write: the loop stays responsive
        try:
            result = action()
        except StoreError as exc:
            self._store_retry_at = time.monotonic() + STORE_RETRY
            self._cannot_record(str(exc))
            return default
        if self.recording_error is not None:
            self.recording_error = None
            log.info("state directory writable again")
            self.emit(Event(kind=EventKind.STATE_RECORDED, message="state is recorded again"))
        return result

    def _cannot_record(self, error: str) -> None:
        if self.recording_error is None:
            log.error("%s; reconciling continues, state is kept in memory only", error)
            self.recording_error = error
            self.bus.publish(Event(kind=EventKind.STATE_UNRECORDED, severity=Severity.ERROR, message=error))
        self.recording_error = error

    def _read(self, action: Callable[[], _T], default: _T) -> _T:
        try:
            return action()
        except StoreError as exc:
            self._cannot_record(str(exc))
            return default


class IdentityConflict(FleetdError):
    """Two inventory clusters reach the same Kubernetes cluster."""


def _with_written(error: str | None, written: Iterable[str]) -> str | None:
    """The error, saying what a failed apply wrote (this time or on earlier failed attempts)."""
    written = list(written)
    if error is None or not written or "written before" in error:
        return error
    names = ", ".join(written[:5]) + (" ..." if len(written) > 5 else "")
    return f"{error}\n(written before the failure on earlier attempts: {names})"

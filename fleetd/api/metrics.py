"""Prometheus metrics: what the engine reports, in one registry per daemon.

prometheus-client enters fleetd only here. `FleetMetrics` owns its own
`CollectorRegistry` (never the process-wide default one), so tests and
several daemons in one process never see each other's series. The engine
calls small, named methods (``set_drifted``, ``observe_status``, ...); it
never touches a metric object, so names and labels live in one place.

Cardinality is bounded on purpose: labels name clusters, syncs, kinds and a
few closed sets of results, never individual objects. Info series carry the
revision as a label; setting a new revision replaces the old series instead
of adding one. `forget_cluster` and `forget_sync` drop every series of a
cluster or sync that left the inventory.

The exposition is Prometheus text format 0.0.4 without the ``*_created``
series prometheus-client adds to counters and histograms: they would double
the number of series and no fleetd alert or dashboard reads them.

| Metric | Type | Labels | Meaning |
|---|---|---|---|
| `fleetd_drifted_objects` | gauge | cluster, sync | objects that differ from git now |
| `fleetd_drift_events_total` | counter | cluster, sync, kind | objects seen drifting from git |
| `fleetd_drift_corrections_total` | counter | cluster, sync, kind | drifted objects re-applied |
| `fleetd_managed_objects` | gauge | cluster, sync | objects the sync applies |
| `fleetd_sync_ready` | gauge 0/1 | cluster, sync | the last reconcile ended ready |
| `fleetd_sync_suspended` | gauge 0/1 | cluster, sync | the sync is suspended |
| `fleetd_sync_info` | gauge = 1 | cluster, sync, revision | revision last applied successfully |
| `fleetd_reconcile_duration_seconds` | histogram | cluster, sync | time one reconcile took |
| `fleetd_reconcile_total` | counter | cluster, sync, result | reconciles, by result (1) |
| `fleetd_last_success_timestamp_seconds` | gauge | cluster, sync | when the last ready reconcile ended |
| `fleetd_cluster_reachable` | gauge 0/1 | cluster | the API server answered last time |
| `fleetd_api_requests_total` | counter | cluster, method | API requests (GET, PATCH, WATCH...) |
| `fleetd_api_errors_total` | counter | cluster, kind | API failures, by kind (2) |
| `fleetd_source_fetch_duration_seconds` | histogram | result | time one git fetch took (3) |
| `fleetd_source_revision_info` | gauge = 1 | url, ref, revision | revision fetched last (4) |
| `fleetd_source_last_fetch_timestamp_seconds` | gauge | | when the last fetch succeeded |
| `fleetd_webhook_requests_total` | counter | receiver, result | webhook calls, by result (5) |
| `fleetd_inventory_valid` | gauge 0/1 | | the last inventory load succeeded |
| `fleetd_rollout_reached_wave` | gauge | | highest wave that has the newest revision (-1: none yet) |
| `fleetd_rollout_halted` | gauge 0/1 | | a wave failed at the newest revision and holds later waves back |
| `fleetd_rollout_held` | gauge 0/1 | | an operator holds the rollout |

(1) ready, failed, waiting, suspended. (2) unreachable, forbidden, server,
other. (3) ok, failed. (4) the url without a password. (5) accepted,
ignored, unauthorized, too_large, bad_request. Timestamps are Unix seconds;
durations are seconds, in buckets from 0.05 s to 5 minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from fleetd.daemon.rollout import Position
from fleetd.daemon.store import SyncStatus
from fleetd.source import redact

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The Content-Type of `FleetMetrics.exposition`."""

RECONCILE_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds: a no-op reconcile of a small sync up to the default sync timeout (5m)."""
FETCH_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""Seconds: a fetch that finds nothing new up to twice the default source timeout."""

RECONCILE_RESULTS: Final = frozenset({"ready", "failed", "waiting", "suspended"})
FETCH_RESULTS: Final = frozenset({"ok", "failed"})
API_ERROR_KINDS: Final = frozenset({"unreachable", "forbidden", "server", "other"})
WEBHOOK_RESULTS: Final = frozenset({"accepted", "ignored", "unauthorized", "too_large", "bad_request"})


class FleetMetrics:
    """Every metric of one daemon, in a registry of its own; see the module docstring."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._api_totals: dict[tuple[str, str, str], int] = {}  # (what, cluster, method or kind)
        self._sync_metrics(self.registry)
        self._cluster_metrics(self.registry)
        self._fleet_metrics(self.registry)

    def _sync_metrics(self, r: CollectorRegistry) -> None:
        cs, csk = ("cluster", "sync"), ("cluster", "sync", "kind")
        self.drifted = Gauge("fleetd_drifted_objects", "Objects that differ from git now.", cs, registry=r)
        self.drift_events = Counter("fleetd_drift_events", "Objects seen drifting from git.", csk, registry=r)
        self.drift_corrections = Counter(
            "fleetd_drift_corrections", "Drifted objects re-applied from git.", csk, registry=r
        )
        self.managed = Gauge("fleetd_managed_objects", "Objects the sync applies.", cs, registry=r)
        self.ready = Gauge("fleetd_sync_ready", "1 if the last reconcile ended ready.", cs, registry=r)
        self.suspended = Gauge("fleetd_sync_suspended", "1 if the sync is suspended.", cs, registry=r)
        self.sync_info = Info("fleetd_sync", "The revision last applied successfully.", cs, registry=r)
        self.reconcile_duration = Histogram(
            "fleetd_reconcile_duration_seconds", "Time one reconcile took.", cs,
            buckets=RECONCILE_BUCKETS, registry=r,
        )  # fmt: skip
        self.reconciles = Counter("fleetd_reconcile", "Reconciles, by result.", (*cs, "result"), registry=r)
        self.last_success = Gauge(
            "fleetd_last_success_timestamp_seconds", "Unix time the last ready reconcile ended.", cs,
            registry=r,
        )  # fmt: skip

    def _cluster_metrics(self, r: CollectorRegistry) -> None:
        self.reachable = Gauge(
            "fleetd_cluster_reachable", "1 if the API server answered the last attempt.", ("cluster",),
            registry=r,
        )  # fmt: skip
        self.api_requests = Counter(
            "fleetd_api_requests", "API requests sent.", ("cluster", "method"), registry=r
        )
        self.api_errors = Counter("fleetd_api_errors", "API failures.", ("cluster", "kind"), registry=r)

    def _fleet_metrics(self, r: CollectorRegistry) -> None:
        self.fetch_duration = Histogram(
            "fleetd_source_fetch_duration_seconds", "Time one git fetch took.", ("result",),
            buckets=FETCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.source_info = Info("fleetd_source_revision", "The revision fetched last.", registry=r)
        self.last_fetch = Gauge(
            "fleetd_source_last_fetch_timestamp_seconds", "Unix time the last fetch succeeded.", registry=r
        )
        self.webhooks = Counter(
            "fleetd_webhook_requests", "Webhook calls, by result.", ("receiver", "result"), registry=r
        )
        self.inventory_valid = Gauge(
            "fleetd_inventory_valid", "1 if the last inventory load succeeded.", registry=r
        )
        self.rollout_reached = Gauge(
            "fleetd_rollout_reached_wave", "Highest wave that has the newest revision (-1: none).", registry=r
        )
        self.rollout_halted = Gauge(
            "fleetd_rollout_halted",
            "1 if a wave failed at the newest revision and holds later waves back.",
            registry=r,
        )
        self.rollout_held = Gauge("fleetd_rollout_held", "1 if an operator holds the rollout.", registry=r)

    # -- per cluster and sync --------------------------------------------------

    def set_drifted(self, cluster: str, sync: str, count: int) -> None:
        """How many of the sync's objects differ from git right now."""
        self.drifted.labels(cluster, sync).set(count)

    def record_drift(self, cluster: str, sync: str, kind: str, count: int = 1) -> None:
        """`count` objects of `kind` were seen drifting."""
        self.drift_events.labels(cluster, sync, kind).inc(count)

    def record_correction(self, cluster: str, sync: str, kind: str, count: int = 1) -> None:
        """`count` drifted objects of `kind` were re-applied from git."""
        self.drift_corrections.labels(cluster, sync, kind).inc(count)

    def set_managed(self, cluster: str, sync: str, count: int) -> None:
        """How many objects the sync applies."""
        self.managed.labels(cluster, sync).set(count)

    def observe_status(self, status: SyncStatus) -> None:
        """One reconcile ended: count it, time it and show its outcome.

        The duration is observed only when a reconcile ran (``duration > 0``):
        a waiting, suspended or unreachable outcome did no work to time.
        """
        _check(status.result, RECONCILE_RESULTS, "reconcile result")
        self.restore_status(status)
        self.reconciles.labels(status.cluster, status.sync, status.result).inc()
        if status.duration > 0:
            self.reconcile_duration.labels(status.cluster, status.sync).observe(status.duration)

    def restore_status(self, status: SyncStatus) -> None:
        """Show a status's outcome without counting it (statuses remembered across a restart).

        Sets ready, suspended and managed objects; on a ready status also the
        applied revision and the time of success.
        """
        key = (status.cluster, status.sync)
        self.ready.labels(*key).set(status.result == "ready")
        self.suspended.labels(*key).set(status.result == "suspended")
        self.managed.labels(*key).set(status.objects)
        if status.result == "ready":
            self.sync_info.labels(*key).info({"revision": status.revision})
            self.last_success.labels(*key).set(status.succeeded_at or status.attempted_at or time.time())

    def forget_sync(self, cluster: str, sync: str) -> None:
        """Drop every series of a sync no longer assigned to `cluster`."""
        for metric in self._per_sync():
            metric.remove_by_labels({"cluster": cluster, "sync": sync})

    # -- per cluster -----------------------------------------------------------

    def set_reachable(self, cluster: str, reachable: bool) -> None:
        """Whether the cluster's API server answered the last attempt."""
        self.reachable.labels(cluster).set(reachable)

    def record_api_requests(self, cluster: str, method: str, count: int) -> None:
        """`count` more API requests were sent with `method` (GET, PATCH, WATCH, ...)."""
        if count > 0:
            self.api_requests.labels(cluster, method).inc(count)

    def report_api_totals(self, cluster: str, totals: Mapping[str, int]) -> None:
        """Counts of requests per method since the client connected (e.g. ``KubeClient.requests``).

        Only the increase since the last report is added. A total lower than
        the one reported before means a new connection started counting from
        zero, so the whole total is new (like a Prometheus counter reset).
        """
        for method, total in totals.items():
            self.record_api_requests(cluster, method, self._increase(("requests", cluster, method), total))

    def report_api_error_totals(self, cluster: str, totals: Mapping[str, int]) -> None:
        """Failed requests per kind since the client connected (``KubeClient.errors``); see above."""
        for kind, total in totals.items():
            increase = self._increase(("errors", cluster, kind), total)
            if increase:
                self.api_errors.labels(cluster, kind if kind in API_ERROR_KINDS else "other").inc(increase)

    def _increase(self, key: tuple[str, str, str], total: int) -> int:
        before = self._api_totals.get(key, 0)
        self._api_totals[key] = total
        return total - before if total >= before else total

    def record_api_error(self, cluster: str, kind: str) -> None:
        """An API request failed; `kind` outside `API_ERROR_KINDS` is counted as ``other``."""
        self.api_errors.labels(cluster, kind if kind in API_ERROR_KINDS else "other").inc()

    def forget_cluster(self, cluster: str) -> None:
        """Drop every series of a cluster that left the inventory."""
        for metric in self._per_sync() + self._per_cluster():
            metric.remove_by_labels({"cluster": cluster})
        self._api_totals = {k: v for k, v in self._api_totals.items() if k[1] != cluster}

    # -- source, webhooks, inventory -------------------------------------------

    def observe_fetch(self, result: str, seconds: float) -> None:
        """One fetch attempt ended (`result` ``ok`` or ``failed``) after `seconds`."""
        _check(result, FETCH_RESULTS, "fetch result")
        self.fetch_duration.labels(result).observe(seconds)
        if result == "ok":
            self.last_fetch.set_to_current_time()

    def set_source_revision(self, url: str, ref: str, revision: str) -> None:
        """The revision the source points at now; the url's password is removed here."""
        self.source_info.info({"url": redact(url), "ref": ref, "revision": revision})

    def record_webhook(self, receiver: str, result: str) -> None:
        """A webhook call to `receiver` ended with `result` (see `WEBHOOK_RESULTS`)."""
        _check(result, WEBHOOK_RESULTS, "webhook result")
        self.webhooks.labels(receiver, result).inc()

    def set_rollout(self, position: Position) -> None:
        """Where the rollout of the newest revision stands."""
        self.rollout_reached.set(-1 if position.reached is None else position.reached)
        self.rollout_halted.set(1 if position.halted_at is not None else 0)
        self.rollout_held.set(1 if position.held else 0)

    def set_inventory_valid(self, valid: bool) -> None:
        """Whether the last inventory load succeeded."""
        self.inventory_valid.set(valid)

    # -- exposition ------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every series in Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(_WithoutCreated(self.registry))

    def _per_sync(self) -> tuple[MetricWrapperBase, ...]:
        return (
            self.drifted, self.drift_events, self.drift_corrections, self.managed, self.ready,
            self.suspended, self.sync_info, self.reconcile_duration, self.reconciles, self.last_success,
        )  # fmt: skip

    def _per_cluster(self) -> tuple[MetricWrapperBase, ...]:
        return (self.reachable, self.api_requests, self.api_errors)


class _WithoutCreated(Collector):
    """The registry's families minus their ``*_created`` samples (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    # Closed label sets keep cardinality bounded; an unknown value is a bug in the caller.
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(sorted(allowed))}")

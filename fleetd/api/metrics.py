"""Prometheus metrics, read from the fleet state at scrape time.

prometheus-client enters fleetd only here. There are no metric objects for
the engine to update: `FleetCollector` reads `FleetState` when Prometheus
scrapes and builds every family then, so no number is kept twice and
nothing can drift apart. The registry is the daemon's own (never the
process-wide default one), and no ``*_created`` series are exposed.

Cardinality is bounded on purpose: labels name clusters, syncs, kinds and a
few closed sets of results, never individual objects. Series of a cluster
or sync that left the inventory disappear with it. When replicas share the
fleet, per-cluster series come only from the replica that owns the cluster
now (sum them across replicas), and the ``fleetd_shard_*`` families appear.

| Metric | Type | Labels | Meaning |
|---|---|---|---|
| `fleetd_drifted_objects` | gauge | cluster, sync | objects that differ from git now |
| `fleetd_drift_events_total` | counter | cluster, sync, kind | objects seen drifting from git |
| `fleetd_drift_corrections_total` | counter | cluster, sync, kind | drifted objects re-applied |
| `fleetd_managed_objects` | gauge | cluster, sync | objects the sync applies |
| `fleetd_sync_ready` | gauge 0/1 | cluster, sync | the last reconcile ended ready |
| `fleetd_sync_suspended` | gauge 0/1 | cluster, sync | the sync is suspended |
| `fleetd_sync_info` | gauge = 1 | cluster, sync, revision | revision last applied successfully |
| `fleetd_sync_status_info` | gauge = 1 | cluster, sync, revision, ready, suspended, reason | state (7) |
| `fleetd_reconcile_duration_seconds` | histogram | cluster, sync | time one reconcile took |
| `fleetd_reconcile_total` | counter | cluster, sync, result | reconciles, by result (1) |
| `fleetd_last_success_timestamp_seconds` | gauge | cluster, sync | when the last ready reconcile ended |
| `fleetd_cluster_reachable` | gauge 0/1 | cluster | the API server answered last time |
| `fleetd_api_requests_total` | counter | cluster, method | API requests (GET, PATCH, WATCH...) |
| `fleetd_api_errors_total` | counter | cluster, kind | API failures, by kind (2) |
| `fleetd_source_fetch_duration_seconds` | histogram | result | time one git fetch took (3) |
| `fleetd_source_revision_info` | gauge = 1 | url, ref, revision | revision fetched last (4) |
| `fleetd_source_last_fetch_timestamp_seconds` | gauge | | when the last fetch succeeded |
| `fleetd_source_disk_bytes` | gauge | part | bytes of the git mirror and of the snapshots (6) |
| `fleetd_webhook_requests_total` | counter | receiver, result | webhook calls, by result (5) |
| `fleetd_inventory_valid` | gauge 0/1 | | the last inventory load succeeded |
| `fleetd_state_recording` | gauge 0/1 | | the state directory accepts writes |
| `fleetd_rollout_reached_wave` | gauge | | highest wave that has the newest revision (-1: none yet) |
| `fleetd_rollout_halted` | gauge 0/1 | | a wave failed at the newest revision and holds later waves back |
| `fleetd_rollout_held` | gauge 0/1 | | an operator holds the rollout |
| `fleetd_notifications_total` | counter | notification, result | notification deliveries, by result (8) |
| `fleetd_shard_member` | gauge 0/1 | replica | this replica holds its membership Lease (9) |
| `fleetd_shard_owned_clusters` | gauge | replica | clusters whose Lease this replica holds (9) |
| `fleetd_shard_replicas` | gauge | state | replicas this one sees, live or gone (9) |
| `fleetd_shard_lease_renew_failures_total` | counter | replica | membership renewals that failed (9) |
| `fleetd_shard_handoffs_total` | counter | replica, kind | clusters acquired, released, lost (9) |
| `fleetd_shard_lease_requests_total` | counter | replica, method | requests to the management cluster (9) |

(1) ready, failed, waiting, suspended, held. (2) unreachable, unauthorized,
forbidden, throttled, server, credentials (the kubeconfig's exec plugin failed or
timed out), other. (3) ok, failed. (4) the url without a
password. (5) accepted, ignored, unauthorized, too_large, bad_request. (6) mirror,
snapshots. (7) in the style of ``flux_resource_info``: one series per sync
of the inventory, ``revision`` the last one attempted (empty before any),
``ready`` True/False/Unknown, ``suspended`` true/false, ``reason`` the
result (ready, failed, waiting, suspended, held, pending). (8) sent, failed
(given up after retries, or dropped from a full queue), suppressed (held
back by the dedup window or the rate limit). (9) only with ``[fleet.sharding]``.
Timestamps are Unix seconds; durations are seconds, in buckets from 0.05 s
to 5 minutes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fleetd.daemon.state import FleetState, Histogram
from fleetd.inventory import Cluster
from fleetd.reconcile.outcome import Result
from fleetd.source import redact

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The Content-Type of `exposition`."""

#: The registry type `registry` returns (so other modules need not import prometheus-client).
Registry = CollectorRegistry

API_ERROR_KINDS: Final = frozenset(
    {"unreachable", "unauthorized", "forbidden", "throttled", "server", "credentials", "other"}
)
WEBHOOK_RESULTS: Final = frozenset({"accepted", "ignored", "unauthorized", "too_large", "bad_request"})
HANDOFF_KINDS: Final = ("acquired", "released", "lost")
_CS = ("cluster", "sync")


class FleetCollector(Collector):
    """Every fleetd metric family, built from a `FleetState` on each collect."""

    def __init__(self, state: FleetState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        yield from self._syncs()
        yield from self._drift()
        yield from self._clusters()
        yield from self._fleet()
        yield from self._shard()

    def _assigned(self) -> list[tuple[str, str]]:
        return [(c.name, s.name) for c in self._owned() for s in c.syncs]

    def _owned(self) -> list[Cluster]:
        """The inventory's clusters this replica serves (all of them, unless replicas share the fleet)."""
        return [c for c in self.state.fleet.clusters if self.state.owns(c.name)]

    def _syncs(self) -> Iterable[Metric]:
        state = self.state
        managed = GaugeMetricFamily("fleetd_managed_objects", "Objects the sync applies.", labels=_CS)
        ready = GaugeMetricFamily("fleetd_sync_ready", "1 if the last reconcile ended ready.", labels=_CS)
        suspended = GaugeMetricFamily("fleetd_sync_suspended", "1 if the sync is suspended.", labels=_CS)
        info = InfoMetricFamily("fleetd_sync", "The revision last applied successfully.", labels=_CS)
        success = GaugeMetricFamily(
            "fleetd_last_success_timestamp_seconds", "Unix time the last ready reconcile ended.", labels=_CS
        )
        for key in self._assigned():
            status = state.statuses.get(key)
            if status is None:
                continue
            managed.add_metric(key, status.objects)
            ready.add_metric(key, status.result == Result.READY)
            suspended.add_metric(key, status.result == Result.SUSPENDED)
            if key in state.applied:
                info.add_metric(key, {"revision": state.applied[key]})
            if status.succeeded_at is not None:
                success.add_metric(key, status.succeeded_at)
        yield from (managed, ready, suspended, info, success, self._status_info())
        assigned = set(self._assigned())
        reconciles = CounterMetricFamily(
            "fleetd_reconcile", "Reconciles, by result.", labels=(*_CS, "result")
        )
        for (cluster, sync, result), n in sorted(state.reconciles.items()):
            if (cluster, sync) in assigned:
                reconciles.add_metric((cluster, sync, result), n)
        yield reconciles
        durations = HistogramMetricFamily(
            "fleetd_reconcile_duration_seconds", "Time one reconcile took.", labels=_CS
        )
        for key, histogram in sorted(state.durations.items()):
            if key in assigned:
                durations.add_metric(key, _buckets(histogram), histogram.total)
        yield durations

    def _status_info(self) -> Metric:
        labels = (*_CS, "revision", "ready", "suspended", "reason")
        info = GaugeMetricFamily("fleetd_sync_status_info", "Every sync's state, flux_resource_info style.",
                                 labels=labels)  # fmt: skip
        for cluster in self._owned():
            held = self.state.suspended(cluster.name)
            for sync in cluster.syncs:
                status = self.state.statuses.get((cluster.name, sync.name))
                result = status.result if status else Result.PENDING
                ready = "Unknown" if result == Result.PENDING else str(result in (Result.READY, Result.HELD))
                stopped = cluster.suspend or sync.suspend or bool({"", sync.name} & held)
                stopped = stopped or result == Result.SUSPENDED
                revision = status.revision if status else ""
                info.add_metric(
                    (cluster.name, sync.name, revision, ready, str(stopped).lower(), str(result)), 1
                )
        return info

    def _drift(self) -> Iterable[Metric]:
        state, assigned = self.state, set(self._assigned())
        drifted = GaugeMetricFamily("fleetd_drifted_objects", "Objects that differ from git now.", labels=_CS)
        for key in sorted(assigned):
            drifted.add_metric(key, state.drifted_count(*key))
        yield drifted
        csk = (*_CS, "kind")
        events = CounterMetricFamily("fleetd_drift_events", "Objects seen drifting from git.", labels=csk)
        corrections = CounterMetricFamily(
            "fleetd_drift_corrections", "Drifted objects re-applied from git.", labels=csk
        )
        for family, counts in ((events, state.drift_events), (corrections, state.corrections)):
            for key3, n in sorted(counts.items()):
                if key3[:2] in assigned:
                    family.add_metric(key3, n)
        yield from (events, corrections)

    def _clusters(self) -> Iterable[Metric]:
        reachable = GaugeMetricFamily(
            "fleetd_cluster_reachable", "1 if the API server answered the last attempt.", labels=("cluster",)
        )
        requests = CounterMetricFamily(
            "fleetd_api_requests", "API requests sent.", labels=("cluster", "method")
        )
        errors = CounterMetricFamily("fleetd_api_errors", "API failures.", labels=("cluster", "kind"))
        for cluster in self._owned():
            health = self.state.cluster(cluster.name)
            if health.reachable is not None:
                reachable.add_metric((cluster.name,), health.reachable)
            for method, n in sorted(health.requests.items()):
                requests.add_metric((cluster.name, method), n)
            kinds: dict[str, int] = {}
            for kind, n in health.errors.items():
                kind = kind if kind in API_ERROR_KINDS else "other"
                kinds[kind] = kinds.get(kind, 0) + n
            for kind, n in sorted(kinds.items()):
                errors.add_metric((cluster.name, kind), n)
        yield from (reachable, requests, errors)

    def _fleet(self) -> Iterable[Metric]:
        state = self.state
        fetches = HistogramMetricFamily(
            "fleetd_source_fetch_duration_seconds", "Time one git fetch took.", labels=("result",)
        )
        for result, histogram in sorted(state.fetches.items()):
            fetches.add_metric((result,), _buckets(histogram), histogram.total)
        yield fetches
        source = state.source
        if source.revision is not None:
            info = InfoMetricFamily("fleetd_source_revision", "The revision fetched last.")
            url = redact(state.fleet.source.url)
            info.add_metric((), {"url": url, "ref": source.ref or "", "revision": source.revision})
            yield info
        disk = state.source_disk()
        if disk is not None:
            usage = GaugeMetricFamily(
                "fleetd_source_disk_bytes", "Bytes the git mirror and the snapshots take.", labels=("part",)
            )
            usage.add_metric(("mirror",), disk.mirror_bytes)
            usage.add_metric(("snapshots",), disk.snapshot_bytes)
            yield usage
        if source.last_fetch is not None:
            yield GaugeMetricFamily(
                "fleetd_source_last_fetch_timestamp_seconds", "Unix time the last fetch succeeded.",
                value=source.last_fetch,
            )  # fmt: skip
        hooks = CounterMetricFamily("fleetd_webhook_requests", "Webhook calls, by result.",
                                    labels=("receiver", "result"))  # fmt: skip
        for key, n in sorted(state.webhooks.items()):
            hooks.add_metric(key, n)
        yield hooks
        sent = CounterMetricFamily("fleetd_notifications", "Notification deliveries, by result.",
                                   labels=("notification", "result"))  # fmt: skip
        known = {n.name for n in state.fleet.notifications}
        for key, n in sorted(state.notifications.items()):
            if key[0] in known:
                sent.add_metric(key, n)
        yield sent
        yield _gauge("fleetd_inventory_valid", "1 if the last inventory load succeeded.",
                     state.inventory_error is None)  # fmt: skip
        yield _gauge("fleetd_state_recording", "1 if the state directory accepts writes.",
                     state.recording_error is None)  # fmt: skip
        position = state.position()
        yield _gauge("fleetd_rollout_reached_wave", "Highest wave that has the newest revision (-1: none).",
                     -1 if position.reached is None else position.reached)  # fmt: skip
        yield _gauge("fleetd_rollout_halted", "1 if a wave failed at the newest revision and holds later "
                     "waves back.", position.halted_at is not None)  # fmt: skip
        yield _gauge("fleetd_rollout_held", "1 if an operator holds the rollout.", position.held)

    def _shard(self) -> Iterable[Metric]:
        shard = self.state.shard
        if shard is None:
            return
        me, by_replica = (shard.identity,), ("replica",)
        member = GaugeMetricFamily("fleetd_shard_member", "1 if this replica is a member.", labels=by_replica)
        member.add_metric(me, shard.member)
        owned = GaugeMetricFamily("fleetd_shard_owned_clusters", "Clusters held.", labels=by_replica)
        owned.add_metric(me, len(shard.owned))
        replicas = GaugeMetricFamily("fleetd_shard_replicas", "Replicas this one sees.", labels=("state",))
        replicas.add_metric(("live",), len(shard.live))
        replicas.add_metric(("gone",), len(shard.gone))
        failures = CounterMetricFamily(
            "fleetd_shard_lease_renew_failures", "Membership renewals that failed.", labels=by_replica
        )
        failures.add_metric(me, shard.renew_failures)
        handoffs = CounterMetricFamily(
            "fleetd_shard_handoffs", "Clusters acquired, released, lost.", labels=(*by_replica, "kind")
        )
        for kind in HANDOFF_KINDS:
            handoffs.add_metric((*me, kind), shard.handoffs[kind])
        requests = CounterMetricFamily(
            "fleetd_shard_lease_requests",
            "Requests to the management cluster.",
            labels=(*by_replica, "method"),
        )
        for method, n in sorted(shard.requests.items()):
            requests.add_metric((*me, method), n)
        yield from (member, owned, replicas, failures, handoffs, requests)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    counts = histogram.counts or [0] * len(histogram.buckets)
    pairs = [(_bound(b), float(n)) for b, n in zip(histogram.buckets, counts, strict=True)]
    return [*pairs, ("+Inf", float(histogram.count))]


def _bound(value: float) -> str:
    return str(float(value))


def registry(state: FleetState) -> CollectorRegistry:
    """A registry of its own holding the fleet collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(state))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """Every series in Prometheus text format (`CONTENT_TYPE`)."""
    return generate_latest(reg)

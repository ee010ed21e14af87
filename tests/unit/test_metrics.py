"""Metrics: the series the engine's calls produce, read back from the exposition as Prometheus would."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fleetd.api.metrics
from fleetd.api.metrics import FleetMetrics
from fleetd.daemon.store import SyncStatus
from tests.prometheus import INSTALL_HINT

pytestmark = pytest.mark.timeout(30)

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def series(metrics: FleetMetrics) -> Series:
    """Every sample of the exposition, keyed by name and labels."""
    text = metrics.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: FleetMetrics, name: str, **labels: str) -> float | None:
    return series(metrics).get((name, frozenset(labels.items())))


def names(metrics: FleetMetrics, prefix: str = "fleetd_") -> set[str]:
    return {name for name, _ in series(metrics) if name.startswith(prefix)}


def status(result: str = "ready", revision: str = "r1", *, cluster: str = "a", sync: str = "s") -> SyncStatus:
    """A status as the engine records it: only a ready reconcile has a success time and a duration here."""
    ready = result == "ready"
    return SyncStatus(
        cluster=cluster, sync=sync, revision=revision, result=result, objects=3, attempted_at=100.0,
        duration=1.5 if ready else 0.0, succeeded_at=101.0 if ready else None,
    )  # fmt: skip


def populated() -> FleetMetrics:
    """Metrics with a series in every per-cluster and per-sync metric, for clusters a and b."""
    m = FleetMetrics()
    for cluster in ("a", "b"):
        for sync in ("s", "t"):
            m.set_drifted(cluster, sync, 2)
            m.record_drift(cluster, sync, "Deployment")
            m.record_correction(cluster, sync, "Deployment")
            m.observe_status(status(revision="r1", cluster=cluster, sync=sync))
        m.set_reachable(cluster, True)
        m.record_api_requests(cluster, "GET", 5)
        m.record_api_error(cluster, "forbidden")
    return m


# -- per cluster and sync ----------------------------------------------------


def test_drift_is_reported_per_cluster_sync_and_kind() -> None:
    m = FleetMetrics()
    m.set_drifted("a", "s", 2)
    m.record_drift("a", "s", "Deployment", 3)
    m.record_correction("a", "s", "Deployment")
    m.set_managed("a", "s", 7)
    assert value(m, "fleetd_drifted_objects", cluster="a", sync="s") == 2
    assert value(m, "fleetd_drift_events_total", cluster="a", sync="s", kind="Deployment") == 3
    assert value(m, "fleetd_drift_corrections_total", cluster="a", sync="s", kind="Deployment") == 1
    assert value(m, "fleetd_managed_objects", cluster="a", sync="s") == 7


def test_a_ready_status_shows_ready_revision_success_time_and_is_counted_and_timed() -> None:
    m = FleetMetrics()
    m.observe_status(status(revision="r1"))
    cs = {"cluster": "a", "sync": "s"}
    assert value(m, "fleetd_sync_ready", **cs) == 1
    assert value(m, "fleetd_sync_suspended", **cs) == 0
    assert value(m, "fleetd_sync_info", **cs, revision="r1") == 1
    assert value(m, "fleetd_last_success_timestamp_seconds", **cs) == 101.0
    assert value(m, "fleetd_managed_objects", **cs) == 3
    assert value(m, "fleetd_reconcile_total", **cs, result="ready") == 1
    assert value(m, "fleetd_reconcile_duration_seconds_sum", **cs) == 1.5
    assert value(m, "fleetd_reconcile_duration_seconds_bucket", **cs, le="2.5") == 1


def test_a_new_revision_replaces_the_info_series_instead_of_adding_one() -> None:
    m = FleetMetrics()
    m.observe_status(status(revision="r1"))
    m.observe_status(status(revision="r2"))
    info = {labels for name, labels in series(m) if name == "fleetd_sync_info"}
    assert info == {frozenset({"cluster": "a", "sync": "s", "revision": "r2"}.items())}


def test_a_failed_reconcile_keeps_showing_the_last_applied_revision_and_success_time() -> None:
    m = FleetMetrics()
    m.observe_status(status(revision="r1"))
    m.observe_status(replace(status("failed", revision="r2"), duration=0.2))
    assert value(m, "fleetd_sync_ready", cluster="a", sync="s") == 0
    assert value(m, "fleetd_sync_info", cluster="a", sync="s", revision="r1") == 1
    assert value(m, "fleetd_last_success_timestamp_seconds", cluster="a", sync="s") == 101.0
    assert value(m, "fleetd_reconcile_total", cluster="a", sync="s", result="failed") == 1


@pytest.mark.parametrize("result", ["waiting", "suspended"])
def test_reconciles_that_did_no_work_are_counted_but_not_timed(result: str) -> None:
    m = FleetMetrics()
    m.observe_status(status(result))
    assert value(m, "fleetd_reconcile_total", cluster="a", sync="s", result=result) == 1
    assert "fleetd_reconcile_duration_seconds_count" not in names(m)
    assert value(m, "fleetd_sync_suspended", cluster="a", sync="s") == (result == "suspended")


def test_statuses_restored_after_a_restart_are_shown_but_not_counted() -> None:
    m = FleetMetrics()
    m.restore_status(status(revision="r1"))
    assert value(m, "fleetd_sync_ready", cluster="a", sync="s") == 1
    assert value(m, "fleetd_sync_info", cluster="a", sync="s", revision="r1") == 1
    assert "fleetd_reconcile_total" not in names(m)


def test_forget_sync_removes_every_series_of_that_sync_and_nothing_else() -> None:
    m = populated()
    m.forget_sync("a", "s")
    left = [dict(labels) for name, labels in series(m) if name.startswith("fleetd_")]
    assert not [labels for labels in left if labels.get("cluster") == "a" and labels.get("sync") == "s"]
    assert {"cluster": "a", "sync": "t"} in left
    assert {"cluster": "b", "sync": "s"} in left


def test_forget_cluster_removes_every_series_of_that_cluster_and_nothing_else() -> None:
    m = populated()
    m.forget_cluster("a")
    clusters = {dict(labels).get("cluster") for _, labels in series(m)}
    assert clusters == {"b", None}


# -- per cluster ---------------------------------------------------------------


def test_api_request_totals_are_added_as_increases_and_a_reconnect_counts_from_zero() -> None:
    m = FleetMetrics()
    m.report_api_totals("a", {"GET": 10, "PATCH": 2})
    m.report_api_totals("a", {"GET": 15, "PATCH": 2})
    m.report_api_totals("a", {"GET": 4})  # a new connection counts from zero
    assert value(m, "fleetd_api_requests_total", cluster="a", method="GET") == 19
    assert value(m, "fleetd_api_requests_total", cluster="a", method="PATCH") == 2


def test_api_errors_of_an_unknown_kind_are_counted_as_other() -> None:
    m = FleetMetrics()
    m.record_api_error("a", "unreachable")
    m.record_api_error("a", "teapot")
    assert value(m, "fleetd_api_errors_total", cluster="a", kind="unreachable") == 1
    assert value(m, "fleetd_api_errors_total", cluster="a", kind="other") == 1


def test_reachability_is_a_zero_or_one_gauge_per_cluster() -> None:
    m = FleetMetrics()
    m.set_reachable("a", True)
    m.set_reachable("b", False)
    assert value(m, "fleetd_cluster_reachable", cluster="a") == 1
    assert value(m, "fleetd_cluster_reachable", cluster="b") == 0


# -- source, webhooks, inventory -----------------------------------------------


def test_the_source_revision_is_shown_without_the_urls_password() -> None:
    m = FleetMetrics()
    m.set_source_revision("https://bot:hunter2@git.example/fleet.git", "branch main", "r1")
    m.set_source_revision("https://bot:hunter2@git.example/fleet.git", "branch main", "r2")
    info = [dict(labels) for name, labels in series(m) if name == "fleetd_source_revision_info"]
    assert info == [{"url": "https://bot:***@git.example/fleet.git", "ref": "branch main", "revision": "r2"}]
    assert b"hunter2" not in m.exposition()


def test_a_successful_fetch_is_timed_and_stamped_and_a_failed_one_only_timed() -> None:
    m = FleetMetrics()
    m.observe_fetch("failed", 2.0)
    assert value(m, "fleetd_source_last_fetch_timestamp_seconds") == 0
    m.observe_fetch("ok", 0.3)
    assert value(m, "fleetd_source_fetch_duration_seconds_count", result="ok") == 1
    assert value(m, "fleetd_source_fetch_duration_seconds_count", result="failed") == 1
    assert (value(m, "fleetd_source_last_fetch_timestamp_seconds") or 0) > 1e9


def test_webhook_calls_and_inventory_validity_are_reported() -> None:
    m = FleetMetrics()
    m.record_webhook("github", "unauthorized")
    m.set_inventory_valid(True)
    assert value(m, "fleetd_webhook_requests_total", receiver="github", result="unauthorized") == 1
    assert value(m, "fleetd_inventory_valid") == 1


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda m: m.observe_status(status("pending")), "reconcile result"),
        (lambda m: m.observe_fetch("maybe", 1.0), "fetch result"),
        (lambda m: m.record_webhook("github", "nice"), "webhook result"),
    ],
)
def test_results_outside_their_closed_set_are_refused(
    call: Callable[[FleetMetrics], object], what: str
) -> None:
    with pytest.raises(ValueError, match=f"unknown {what}"):
        call(FleetMetrics())


# -- the exposition ------------------------------------------------------------


def test_two_instances_do_not_share_series() -> None:
    one, two = FleetMetrics(), FleetMetrics()
    one.set_drifted("a", "s", 1)
    assert "fleetd_drifted_objects" not in names(two)


def test_the_exposition_has_no_created_series() -> None:
    assert not [n for n in names(populated()) if n.endswith("_created")]


def test_the_module_docstring_table_lists_exactly_the_exposed_metrics() -> None:
    m = populated()
    m.observe_fetch("ok", 1.0)
    m.set_source_revision("https://git.example/fleet.git", "branch main", "r1")
    m.record_webhook("github", "accepted")
    documented = set(re.findall(r"^\| `(fleetd_\w+)`", fleetd.api.metrics.__doc__ or "", re.MULTILINE))
    exposed = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names(m)}
    assert documented == exposed


def test_promtool_accepts_the_exposition() -> None:
    m = populated()
    m.observe_fetch("ok", 1.0)
    m.set_source_revision("https://git.example/fleet.git", "branch main", "r1")
    m.record_webhook("generic", "accepted")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(f"promtool is not installed: {INSTALL_HINT}")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=m.exposition(), capture_output=True, timeout=20,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert not result.stdout.strip(), result.stdout.decode()  # no lint remarks either

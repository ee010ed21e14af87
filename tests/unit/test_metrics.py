"""Metrics: what the fleet state holds, read back from the exposition as Prometheus would.

The collector reads `FleetState` at scrape time, so these tests drive a real
fleet state (a real inventory on disk, a real SQLite store) through the
calls the daemon makes, and parse what a scrape returns.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fleetd.api.metrics
from fleetd.api.metrics import exposition, registry
from fleetd.daemon.state import FleetState
from fleetd.inventory import Notification, TargetKind, load_fleet
from fleetd.reconcile.outcome import Result, SyncOutcome
from fleetd.source import DiskUsage
from tests.fleetstate import fleet_state
from tests.prometheus import INSTALL_HINT

pytestmark = pytest.mark.timeout(30)

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def series(state: FleetState) -> Series:
    """Every sample of a scrape, keyed by name and labels."""
    text = exposition(registry(state)).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(state: FleetState, name: str, **labels: str) -> float | None:
    return series(state).get((name, frozenset(labels.items())))


def names(state: FleetState, prefix: str = "fleetd_") -> set[str]:
    return {name for name, _ in series(state) if name.startswith(prefix)}


def outcome(result: Result = Result.READY, revision: str = "r1", *, sync: str = "s") -> SyncOutcome:
    ready = result == Result.READY
    return SyncOutcome(sync=sync, revision=revision, result=result, objects=3, duration=1.5 if ready else 0.0)


def populated(tmp_path: Path, *, sharded: bool = False) -> FleetState:
    """A series in every per-cluster and per-sync metric, for clusters a and b.

    ``sharded``: the state of replica hub-a of a sharded fleet, owning both clusters.
    """
    state = fleet_state(tmp_path, replica="hub-a" if sharded else None)
    if sharded:
        state.shard_member(True, None)
        for cluster in ("a", "b"):
            state.shard_gained(cluster, None)
        state.shard_released("a", "hub-b")
        state.shard_lost("b", "the membership could not be renewed in time")
        state.shard_renew_failed("timed out")
        mine = {"a": "hub-a", "b": "hub-a"}
        state.shard_seen(
            owned={"a", "b"}, live={"hub-a", "hub-b"}, gone={"hub-c"}, holders=mine, assigned=mine
        )
        assert state.shard is not None
        state.shard.requests.update({"GET": 3, "PUT": 12})
    for cluster in ("a", "b"):
        for sync in ("s", "t"):
            state.drift(cluster, sync, "Deployment ns/web", "Deployment", "reported", "/spec changed")
            state.drift(cluster, sync, "Deployment ns/api", "Deployment", "corrected", "/spec changed")
            state.record(cluster, outcome(sync=sync))
        state.reachability(cluster, True)
        state.cluster(cluster).requests["GET"] += 5
        state.cluster(cluster).errors["forbidden"] += 1
    state.fetched(1.0, revision="r1", ref="branch main", message="first")
    state.webhook("github", "accepted")
    state.source.disk = DiskUsage(mirror_bytes=4096, snapshot_bytes=8192, snapshots=1)
    chat = Notification(name="chat", kind=TargetKind.APPRISE, url="json://127.0.0.1/hook")
    state.inventory(dataclasses.replace(state.fleet, notifications=(chat,)), None)
    state.notifications[("chat", "sent")] += 1
    return state


# -- per cluster and sync ----------------------------------------------------


def test_drift_is_reported_per_cluster_sync_and_kind(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    state.record("a", outcome())
    for name in ("one", "two"):
        state.drift("a", "s", f"Deployment ns/{name}", "Deployment", "reported", "/spec changed")
    state.drift("a", "s", "Deployment ns/three", "Deployment", "corrected", "/spec changed")
    assert value(state, "fleetd_drifted_objects", cluster="a", sync="s") == 2
    assert value(state, "fleetd_drift_events_total", cluster="a", sync="s", kind="Deployment") == 3
    assert value(state, "fleetd_drift_corrections_total", cluster="a", sync="s", kind="Deployment") == 1
    assert value(state, "fleetd_managed_objects", cluster="a", sync="s") == 3
    state.drift("a", "s", "Deployment ns/one", "Deployment", "cleared", "matches git again")
    assert value(state, "fleetd_drifted_objects", cluster="a", sync="s") == 1


def test_a_ready_status_shows_ready_revision_success_time_and_is_counted_and_timed(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    state.record("a", outcome(revision="r1"))
    cs = {"cluster": "a", "sync": "s"}
    assert value(state, "fleetd_sync_ready", **cs) == 1
    assert value(state, "fleetd_sync_suspended", **cs) == 0
    assert value(state, "fleetd_sync_info", **cs, revision="r1") == 1
    assert (value(state, "fleetd_last_success_timestamp_seconds", **cs) or 0) > 1e9
    assert value(state, "fleetd_managed_objects", **cs) == 3
    assert value(state, "fleetd_reconcile_total", **cs, result="ready") == 1
    assert value(state, "fleetd_reconcile_duration_seconds_sum", **cs) == 1.5
    assert value(state, "fleetd_reconcile_duration_seconds_bucket", **cs, le="2.5") == 1


def test_a_new_revision_replaces_the_info_series_instead_of_adding_one(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    state.record("a", outcome(revision="r1"))
    state.record("a", outcome(revision="r2"))
    info = {labels for name, labels in series(state) if name == "fleetd_sync_info"}
    assert info == {frozenset({"cluster": "a", "sync": "s", "revision": "r2"}.items())}


def test_a_failed_reconcile_keeps_showing_the_last_applied_revision_and_success_time(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    state.record("a", outcome(revision="r1"))
    succeeded = value(state, "fleetd_last_success_timestamp_seconds", cluster="a", sync="s")
    state.record("a", outcome(Result.FAILED, revision="r2"))
    assert value(state, "fleetd_sync_ready", cluster="a", sync="s") == 0
    assert value(state, "fleetd_sync_info", cluster="a", sync="s", revision="r1") == 1
    assert value(state, "fleetd_last_success_timestamp_seconds", cluster="a", sync="s") == succeeded
    assert value(state, "fleetd_reconcile_total", cluster="a", sync="s", result="failed") == 1


@pytest.mark.parametrize("result", [Result.WAITING, Result.SUSPENDED])
def test_reconciles_that_did_no_work_are_counted_but_not_timed(tmp_path: Path, result: Result) -> None:
    state = fleet_state(tmp_path)
    state.record("a", outcome(result))
    assert value(state, "fleetd_reconcile_total", cluster="a", sync="s", result=str(result)) == 1
    assert "fleetd_reconcile_duration_seconds_count" not in names(state)
    assert value(state, "fleetd_sync_suspended", cluster="a", sync="s") == (result == Result.SUSPENDED)


def test_statuses_restored_after_a_restart_are_shown_but_not_counted(tmp_path: Path) -> None:
    fleet_state(tmp_path).record("a", outcome(revision="r1"))
    restarted = fleet_state(tmp_path)
    assert value(restarted, "fleetd_sync_ready", cluster="a", sync="s") == 1
    assert value(restarted, "fleetd_sync_info", cluster="a", sync="s", revision="r1") == 1
    assert "fleetd_reconcile_total" not in names(restarted)


def test_syncs_and_clusters_that_left_the_inventory_have_no_series(tmp_path: Path) -> None:
    state = populated(tmp_path)
    smaller = fleet_state(tmp_path / "smaller", clusters=("b",), syncs=("t",)).fleet
    state.inventory(smaller, None)
    left = [dict(labels) for name, labels in series(state) if name.startswith("fleetd_")]
    assert {labels.get("cluster") for labels in left} == {"b", None}
    assert not [labels for labels in left if labels.get("sync") == "s"]
    assert {"cluster": "b", "sync": "t"} in left


# -- per cluster ---------------------------------------------------------------


def test_api_requests_and_errors_come_from_the_clusters_own_counters(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    counters = state.cluster("a")
    counters.requests.update({"GET": 10, "PATCH": 2})
    counters.errors.update({"unreachable": 1, "teapot": 1})
    assert value(state, "fleetd_api_requests_total", cluster="a", method="GET") == 10
    assert value(state, "fleetd_api_requests_total", cluster="a", method="PATCH") == 2
    assert value(state, "fleetd_api_errors_total", cluster="a", kind="unreachable") == 1
    assert value(state, "fleetd_api_errors_total", cluster="a", kind="other") == 1


def test_reachability_is_a_zero_or_one_gauge_per_cluster(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    state.reachability("a", True)
    state.reachability("b", False, "cannot connect")
    assert value(state, "fleetd_cluster_reachable", cluster="a") == 1
    assert value(state, "fleetd_cluster_reachable", cluster="b") == 0


# -- source, webhooks, inventory -----------------------------------------------


def test_the_source_revision_is_shown_without_the_urls_password(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    config = state.fleet.file.read_text().replace(
        f'url = "{tmp_path / "repo"}"', 'url = "https://bot:hunter2@git.example/fleet.git"'
    )
    state.fleet.file.write_text(config)
    state.inventory(load_fleet(state.fleet.file), None)
    state.fetched(0.1, revision="r1", ref="branch main", message="one")
    state.fetched(0.1, revision="r2", ref="branch main", message="two")
    info = [dict(labels) for name, labels in series(state) if name == "fleetd_source_revision_info"]
    assert info == [{"url": "https://bot:***@git.example/fleet.git", "ref": "branch main", "revision": "r2"}]
    assert b"hunter2" not in exposition(registry(state))


def test_a_successful_fetch_is_timed_and_stamped_and_a_failed_one_only_timed(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    state.fetch_failed(2.0, "cannot reach the git server")
    assert value(state, "fleetd_source_last_fetch_timestamp_seconds") is None
    state.fetched(0.3, revision="r1", ref="branch main", message="one")
    assert value(state, "fleetd_source_fetch_duration_seconds_count", result="ok") == 1
    assert value(state, "fleetd_source_fetch_duration_seconds_count", result="failed") == 1
    assert (value(state, "fleetd_source_last_fetch_timestamp_seconds") or 0) > 1e9


def test_webhook_calls_inventory_validity_and_recording_are_reported(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    state.webhook("github", "unauthorized")
    assert value(state, "fleetd_webhook_requests_total", receiver="github", result="unauthorized") == 1
    assert value(state, "fleetd_inventory_valid") == 1
    assert value(state, "fleetd_state_recording") == 1
    state.inventory(None, "clusters/pi5.toml:3: wave: must be an integer")
    assert value(state, "fleetd_inventory_valid") == 0


# -- the exposition ------------------------------------------------------------


def test_two_fleet_states_do_not_share_series(tmp_path: Path) -> None:
    one, two = fleet_state(tmp_path / "one"), fleet_state(tmp_path / "two")
    one.record("a", outcome())
    assert "fleetd_sync_ready" in names(one)
    assert "fleetd_sync_ready" not in names(two)


def test_the_exposition_has_no_created_series(tmp_path: Path) -> None:
    assert not [n for n in names(populated(tmp_path)) if n.endswith("_created")]


def test_the_module_docstring_table_lists_exactly_the_exposed_metrics(tmp_path: Path) -> None:
    state = populated(tmp_path, sharded=True)
    documented = set(re.findall(r"^\| `(fleetd_\w+)`", fleetd.api.metrics.__doc__ or "", re.MULTILINE))
    exposed = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names(state)}
    assert documented == exposed


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    state = populated(tmp_path, sharded=True)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(f"promtool is not installed: {INSTALL_HINT}")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition(registry(state)), capture_output=True, timeout=20,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert not result.stdout.strip(), result.stdout.decode()  # no lint remarks either


def test_every_sync_of_the_inventory_has_one_status_info_series_in_the_style_of_flux(tmp_path: Path) -> None:
    state = fleet_state(tmp_path)
    state.record("a", outcome(revision="r1"))
    state.record("a", outcome(Result.FAILED, sync="t", revision="r2"))
    state.set_suspended("b", "t", True)
    info = {
        (dict(labels)["cluster"], dict(labels)["sync"]): dict(labels)
        for name, labels in series(state)
        if name == "fleetd_sync_status_info"
    }
    assert set(info) == {("a", "s"), ("a", "t"), ("b", "s"), ("b", "t")}
    assert info[("a", "s")] == {
        "cluster": "a",
        "sync": "s",
        "revision": "r1",
        "ready": "True",
        "suspended": "false",
        "reason": "ready",
    }
    assert (info[("a", "t")]["ready"], info[("a", "t")]["reason"], info[("a", "t")]["revision"]) == (
        "False",
        "failed",
        "r2",
    )
    assert (info[("b", "s")]["ready"], info[("b", "s")]["reason"], info[("b", "s")]["revision"]) == (
        "Unknown",
        "pending",
        "",
    )
    assert info[("b", "t")]["suspended"] == "true"


def test_notification_counters_show_only_notifications_of_the_inventory(tmp_path: Path) -> None:
    state = populated(tmp_path)
    state.notifications[("gone", "sent")] += 3
    assert value(state, "fleetd_notifications_total", notification="chat", result="sent") == 1
    assert not [labels for name, labels in series(state) if ("notification", "gone") in labels]


# -- sharding ------------------------------------------------------------------------


def test_a_replica_reports_its_membership_owned_clusters_hand_offs_renew_failures_and_lease_load(
    tmp_path: Path,
) -> None:
    state = populated(tmp_path, sharded=True)
    me = {"replica": "hub-a"}
    assert value(state, "fleetd_shard_member", **me) == 1
    assert value(state, "fleetd_shard_owned_clusters", **me) == 2
    replicas = series(state)
    assert replicas[("fleetd_shard_replicas", frozenset({("state", "live")}))] == 2
    assert replicas[("fleetd_shard_replicas", frozenset({("state", "gone")}))] == 1
    assert value(state, "fleetd_shard_lease_renew_failures_total", **me) == 1
    assert value(state, "fleetd_shard_handoffs_total", **me, kind="acquired") == 2
    assert value(state, "fleetd_shard_handoffs_total", **me, kind="released") == 1
    assert value(state, "fleetd_shard_handoffs_total", **me, kind="lost") == 1
    assert value(state, "fleetd_shard_lease_requests_total", **me, method="PUT") == 12


def test_a_replica_exposes_per_cluster_series_only_for_the_clusters_it_owns(tmp_path: Path) -> None:
    state = populated(tmp_path, sharded=True)
    state.shard_seen(owned={"b"}, live={"hub-a", "hub-b"}, gone=set(),
                     holders={"a": "hub-b", "b": "hub-a"}, assigned={"a": "hub-b", "b": "hub-a"})  # fmt: skip
    clusters = {dict(labels).get("cluster") for name, labels in series(state) if name.startswith("fleetd_")}
    assert clusters == {"b", None}


def test_a_fleet_without_sharding_exposes_no_shard_series(tmp_path: Path) -> None:
    assert not [n for n in names(populated(tmp_path)) if n.startswith("fleetd_shard_")]

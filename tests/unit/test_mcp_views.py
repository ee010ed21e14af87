"""The MCP tools' answers from status documents, without a daemon: explanations, guard, offline state."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from fleetd.daemon.events import Event, EventKind, Severity
from fleetd.mcp.access import FleetAccess, ToolFailure
from fleetd.mcp.explain import explain
from fleetd.mcp.manifests import scrubbed, shown_object
from fleetd.mcp.views import guard, overview
from fleetd.reconcile.outcome import Result, SyncOutcome
from tests.fleetstate import fleet_state

pytestmark = pytest.mark.timeout(20)
A, B = "a" * 40, "b" * 40


def sync(name: str, result: str = "ready", revision: str | None = A, **more: Any) -> dict[str, Any]:
    return {"name": name, "result": result, "revision": revision, "error": None, "drifted": 0,
            "drifted_objects": [], "suspended": False, "written": []} | more  # fmt: skip


def document(
    *, a: list[dict[str, Any]], b: list[dict[str, Any]] | None = None, **rollout: Any
) -> dict[str, Any]:
    position = {"target": A, "waves": {"0": A}, "reached_wave": 0, "halted_at_wave": None, "held": False}
    return {
        "fleet": "f", "source": {"revision": A}, "rollout": position | rollout,
        "clusters": [
            {"name": "a", "wave": 0, "revision": A, "reachable": True, "last_error": None, "syncs": a},
            {"name": "b", "wave": 0, "revision": A, "reachable": True, "last_error": None,
             "syncs": b or [sync("s"), sync("t")]},
        ],
    }  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path) -> Any:
    return fleet_state(tmp_path).fleet


def test_a_ready_sync_is_explained_as_ready_with_no_reasons(fleet: Any) -> None:
    answer = explain(document(a=[sync("s"), sync("t")]), fleet, "a", "s", [])
    assert (answer["ready"], answer["reasons"]) == (True, [])


def test_a_failed_sync_is_explained_with_its_error_and_what_was_written(fleet: Any) -> None:
    failed = sync("s", "failed", error="ConfigMap ns/x: invalid name", written=["ConfigMap ns/y"])
    events = [Event(kind=EventKind.RECONCILE_FAILED, message="x", severity=Severity.ERROR)] * 3
    answer = explain(document(a=[failed, sync("t")]), fleet, "a", "s", events)
    assert answer["ready"] is False
    assert "ConfigMap ns/x: invalid name" in answer["summary"]
    assert any("3 failed reconciles" in r for r in answer["reasons"])
    assert any("ConfigMap ns/y" in r for r in answer["reasons"])


def test_a_cluster_held_back_by_a_failing_wave_says_so_and_how_to_promote(fleet: Any) -> None:
    doc = document(a=[sync("s", revision=B), sync("t", revision=B)], waves={"0": A, "1": B}, halted_at_wave=0)
    doc["clusters"][0]["wave"] = 1
    answer = explain(doc, fleet, "a", "s", [])
    assert "held back by the rollout: wave 0 failed" in answer["summary"]
    assert "fleetd rollout promote" in " ".join(answer["next_steps"])


def test_an_unreachable_suspended_cluster_names_both_reasons(fleet: Any) -> None:
    doc = document(a=[sync("s", suspended=True), sync("t")])
    doc["clusters"][0] |= {"reachable": False, "last_error": "connection refused\nmore"}
    answer = explain(doc, fleet, "a", "s", [])
    assert answer["reasons"][0].startswith("suspended by an operator")
    assert "cluster a is unreachable: connection refused" in answer["reasons"][1]


def test_an_unknown_cluster_or_sync_is_a_tool_failure_naming_the_known_ones(fleet: Any) -> None:
    with pytest.raises(ToolFailure, match="clusters: a, b"):
        explain(document(a=[sync("s")]), fleet, "c", "s", [])
    with pytest.raises(ToolFailure, match="its syncs: s, t"):
        explain(document(a=[sync("s"), sync("t")]), fleet, "a", "u", [])


def test_the_overview_lists_what_needs_attention_first() -> None:
    doc = document(a=[sync("s", "failed", error="boom\ntrace"), sync("t", drifted=2)])
    doc["clusters"][1] |= {"reachable": False, "last_error": "no route"}
    answer = overview(doc)
    assert answer["attention"] == [
        "a/s failed: boom",
        "a/t: 2 object(s) drifted from git",
        "cluster b unreachable: no route",
    ]
    assert answer["sync_results"] == {"failed": 1, "ready": 3}


def test_the_guard_masks_any_secret_manifest_wherever_it_sits() -> None:
    secret = {"kind": "Secret", "data": {"k": "c2VjcmV0"}, "stringData": {"p": "plain"}}
    answer = guard(
        {"deep": [{"manifest": copy.deepcopy(secret)}], "other": {"kind": "ConfigMap", "data": {"a": "b"}}}
    )
    assert answer["deep"][0]["manifest"] == {
        "kind": "Secret",
        "data": {"k": "***"},
        "stringData": {"p": "***"},
    }
    assert answer["other"]["data"] == {"a": "b"}


async def test_without_a_running_daemon_the_recorded_state_is_served_and_marked_not_live(
    tmp_path: Path,
) -> None:
    state = fleet_state(tmp_path)
    state.record("a", SyncOutcome(sync="s", revision=A, result=Result.FAILED, error="boom"))
    doc = await FleetAccess(state.fleet.file).status()
    assert doc["live"] is False
    assert "not running" in doc["daemon"]
    (cluster_a,) = [c for c in doc["clusters"] if c["name"] == "a"]
    assert {s["name"]: s["result"] for s in cluster_a["syncs"]} == {"s": "failed", "t": "pending"}


def test_a_secret_value_copied_into_another_object_is_scrubbed_from_the_manifests(tmp_path: Path) -> None:
    secret = {"kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": "hunter2-canary"}}
    leaky = {"kind": "ConfigMap", "metadata": {"name": "app", "annotations": {"note": "pw=hunter2-canary"}}}
    (tmp_path / "app.yaml").write_text("kind: ConfigMap\n")
    shown = [scrubbed(shown_object(o, "app.yaml#1", tmp_path), [secret]) for o in (secret, leaky)]
    assert shown[0]["manifest"]["stringData"] == {"password": "***"}
    assert shown[1]["manifest"]["metadata"]["annotations"] == {"note": "pw=***"}


def test_an_object_from_a_sops_encrypted_file_shows_only_its_identity(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text(
        "kind: ConfigMap\ndata:\n  a: ENC[...]\nsops:\n  mac: x\n  lastmodified: y\n"
    )
    shown = shown_object(
        {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "plain"}}, "cm.yaml#1", tmp_path
    )
    assert shown["manifest"] == {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": "***"}

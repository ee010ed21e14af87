"""``fleetd diff``'s pure parts: masking Secrets, predicting kubectl take-over, formatting the report."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from fleetd.cli.diff import label, render_report, report_json
from fleetd.kube.objects import ObjRef
from fleetd.reconcile.apply import Desired
from fleetd.reconcile.diff import (
    MASK,
    MASK_CHANGED,
    DiffReport,
    ObjectDiff,
    SyncDiff,
    masked,
    object_diff,
    scrub,
    taken_over,
)

pytestmark = pytest.mark.timeout(10)

OLD_PW, NEW_PW = "old-password-1d2f", "new-password-9c8b"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "demo", "resourceVersion": "7", "uid": "u"},
        "data": {k: b64(v) for k, v in data.items()},
    }


def configmap(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "demo", "resourceVersion": "3", "managedFields": []},
        "data": data,
    }


# --- masking secrets ------------------------------------------------------------------------------


def test_a_changed_secret_value_reads_changed_and_an_equal_one_only_masked() -> None:
    before, after = masked(secret(pw=OLD_PW, user="admin"), secret(pw=NEW_PW, user="admin"))
    assert before["data"] == {"pw": MASK, "user": MASK}
    assert after["data"] == {"pw": MASK_CHANGED, "user": MASK}


def test_added_and_removed_secret_keys_are_masked_without_a_changed_mark() -> None:
    before, after = masked(secret(old=OLD_PW), secret(new=NEW_PW))
    assert before["data"] == {"old": MASK}
    assert after["data"] == {"new": MASK}


def test_string_data_and_a_last_applied_annotation_are_masked_too() -> None:
    live = secret(pw=OLD_PW)
    live["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": OLD_PW, "a": "b"}
    desired = {**secret(), "stringData": {"pw": NEW_PW}}
    before, after = masked(live, desired)
    assert before["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/last-applied-configuration": MASK,
        "a": "b",
    }
    assert after["stringData"] == {"pw": MASK}


def test_masking_leaves_its_inputs_and_other_kinds_alone() -> None:
    live, desired = secret(pw=OLD_PW), secret(pw=NEW_PW)
    kept = copy.deepcopy((live, desired))
    masked(live, desired)
    assert (live, desired) == kept
    cm = configmap(pw=OLD_PW)
    assert masked(cm, cm) == (cm, cm)


def test_a_secret_diff_shows_the_change_but_no_value_plain_or_base64() -> None:
    text = object_diff(secret(pw=OLD_PW), secret(pw=NEW_PW))
    assert MASK_CHANGED in text
    for value in (OLD_PW, NEW_PW, b64(OLD_PW), b64(NEW_PW)):
        assert value not in text


def test_scrub_removes_secret_values_and_their_base64_from_messages() -> None:
    objs = [Desired(obj={**secret(pw=OLD_PW), "stringData": {"token": NEW_PW, "n": "1"}}, origin="s.yaml#1")]
    message = f"bad {OLD_PW} / {b64(OLD_PW)} / {NEW_PW} / {b64(NEW_PW)} in 1 place"
    assert scrub(message, objs) == f"bad {MASK} / {MASK} / {MASK} / {MASK} in 1 place"


# --- diffs of other objects -----------------------------------------------------------------------


def test_a_configmap_diff_shows_the_value_without_bookkeeping() -> None:
    live = configmap(colour="blue", size="l")
    after = {**configmap(colour="green", size="l"), "status": {"x": 1}}
    after["metadata"]["resourceVersion"] = "4"
    text = object_diff(live, after)
    assert text.splitlines()[:2] == ["--- live", "+++ after apply"]
    assert "-  colour: blue" in text.splitlines()
    assert "+  colour: green" in text.splitlines()
    assert "resourceVersion" not in text
    assert "status" not in text


def test_multi_line_values_diff_line_by_line() -> None:
    text = object_diff(configmap(conf="a = 1\nb = 2\n"), configmap(conf="a = 1\nb = 3\n"))
    assert "-    b = 2" in text.splitlines()
    assert "+    b = 3" in text.splitlines()


# --- predicting the take-over of kubectl's fields -------------------------------------------------


def managed(manager: str, fields: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {"manager": manager, "operation": "Update", "fieldsV1": fields, **extra}


def edited_configmap(*entries: dict[str, Any]) -> dict[str, Any]:
    cm = configmap(colour="red")
    cm["metadata"]["labels"] = {"app": "x", "by-hand": "yes", "controller": "c"}
    cm["metadata"]["managedFields"] = list(entries)
    return cm


def test_a_label_only_kubectl_wrote_is_predicted_gone_and_gits_fields_stay() -> None:
    edit = {"f:metadata": {"f:labels": {"f:by-hand": {}, "f:app": {}}}, "f:data": {"f:colour": {}}}
    controller: dict[str, Any] = {"f:metadata": {"f:labels": {"f:controller": {}}}}
    live = edited_configmap(managed("kubectl-edit", edit), managed("some-controller", controller))
    desired = {**configmap(colour="blue"), "metadata": {"name": "settings", "labels": {"app": "x"}}}
    result = taken_over(live, live, desired)
    assert result["metadata"]["labels"] == {"app": "x", "controller": "c"}
    assert result["data"] == {"colour": "red"}, "fields git sets are the dry run's business"


def test_fields_of_a_kubectl_subresource_update_are_not_taken_over() -> None:
    scale = managed("kubectl", {"f:metadata": {"f:labels": {"f:by-hand": {}}}}, subresource="scale")
    live = edited_configmap(scale)
    assert taken_over(live, live, configmap())["metadata"]["labels"]["by-hand"] == "yes"


# --- the report -----------------------------------------------------------------------------------


def ref(kind: str, name: str, namespace: str = "demo", group: str = "") -> ObjRef:
    return ObjRef(group, kind, namespace, name)


def report(*syncs: SyncDiff) -> DiffReport:
    return DiffReport(cluster="spoke-a", revision="0123456789abcdef" * 2, ref="branch main", syncs=syncs)


CHANGES = SyncDiff(
    name="apps",
    objects=(
        ObjectDiff(ref=ref("Deployment", "web", group="apps"), action="created", origin="apps/web.yaml#1"),
        ObjectDiff(
            ref=ref("ConfigMap", "settings"),
            action="changed",
            origin="apps/cm.yaml#1",
            diff="--- live\n+++ after apply\n@@ -1 +1 @@\n-  colour: blue\n+  colour: green",
            notes=("fields written by kubectl-edit are taken over",),
        ),
        ObjectDiff(ref=ref("ConfigMap", "same"), action="unchanged", origin="apps/same.yaml#1"),
        ObjectDiff(ref=ref("ConfigMap", "old"), action="pruned"),
    ),
)


def test_the_report_lists_creates_changes_with_their_diff_and_prunes_then_the_totals() -> None:
    text = render_report(report(CHANGES, SyncDiff(name="quiet")), color=False)
    assert text.splitlines() == [
        "cluster spoke-a at 0123456789ab (branch main)",
        "sync apps:",
        "+ Deployment demo/web (created)",
        "~ ConfigMap demo/settings (changed)",
        "    note: fields written by kubectl-edit are taken over",
        "    --- live",
        "    +++ after apply",
        "    @@ -1 +1 @@",
        "    -  colour: blue",
        "    +  colour: green",
        "- ConfigMap demo/old (would prune)",
        "sync quiet: no changes",
        "1 to create, 1 to change, 1 to prune",
    ]


def test_a_report_without_changes_says_so() -> None:
    quiet = SyncDiff(name="apps", objects=(ObjectDiff(ref=ref("ConfigMap", "same"), action="unchanged"),))
    text = render_report(report(quiet), color=False)
    assert text.splitlines()[-2:] == ["sync apps: no changes", "0 to create, 0 to change, 0 to prune"]
    assert not report(quiet).has_changes


def test_a_sync_that_could_not_be_diffed_is_flagged_and_its_errors_are_in_the_report() -> None:
    broken = SyncDiff(name="apps", errors=("apps/bad.yaml (document 1): undefined variable",))
    text = render_report(report(broken), color=False)
    assert "! sync apps: could not be diffed (1 error(s))" in text.splitlines()
    assert report(broken).errors == ["sync apps: apps/bad.yaml (document 1): undefined variable"]


def test_colour_is_used_only_when_asked_for() -> None:
    assert "\x1b[" not in render_report(report(CHANGES), color=False)
    coloured = render_report(report(CHANGES), color=True)
    assert "\x1b[32m+ Deployment demo/web (created)\x1b[0m" in coloured
    assert "\x1b[31m- ConfigMap demo/old (would prune)\x1b[0m" in coloured


def test_custom_kinds_keep_their_group_and_cluster_scoped_objects_have_no_namespace() -> None:
    assert label(ref("Widget", "w", group="example.com")) == "Widget.example.com demo/w"
    assert label(ref("Namespace", "demo", namespace="")) == "Namespace demo"


def test_the_json_document_carries_the_same_content_and_the_unchanged_objects() -> None:
    doc = json.loads(json.dumps(report_json(report(CHANGES))))
    assert doc["ok"] is True
    assert doc["changes"] is True
    assert doc["summary"] == {"created": 1, "changed": 1, "pruned": 1}
    (apps,) = doc["syncs"]
    by_name = {o["name"]: o for o in apps["objects"]}
    assert by_name["settings"]["action"] == "changed"
    assert "+  colour: green" in by_name["settings"]["diff"]
    assert by_name["web"] | {"diff": ""} == {
        "action": "created", "kind": "Deployment", "group": "apps", "namespace": "demo", "name": "web",
        "origin": "apps/web.yaml#1", "diff": "", "notes": [],
    }  # fmt: skip
    assert by_name["same"]["action"] == "unchanged"
    assert by_name["old"]["origin"] is None

"""JSON pointers for ignore rules."""

from __future__ import annotations

from typing import Any

from fleetd.util.pointers import lookup, overlay, tokens, without


def test_pointer_tokens_unescape_slash_and_tilde() -> None:
    assert tokens("/metadata/annotations/example.com~1a~0b") == ["metadata", "annotations", "example.com/a~b"]


def test_lookup_walks_mappings_and_list_indexes() -> None:
    doc = {"spec": {"containers": [{"image": "a"}, {"image": "b"}]}}
    assert lookup(doc, "/spec/containers/1/image") == (True, "b")
    assert lookup(doc, "/spec/containers/2/image") == (False, None)
    assert lookup(doc, "/spec/replicas") == (False, None)


def test_without_removes_present_paths_and_ignores_missing_ones() -> None:
    doc: dict[str, Any] = {
        "spec": {"replicas": 3, "paused": False},
        "metadata": {"annotations": {"a/b": "x"}},
    }
    out = without(doc, ("/spec/replicas", "/spec/nothing", "/metadata/annotations/a~1b"))
    assert out == {"spec": {"paused": False}, "metadata": {"annotations": {}}}
    assert doc["spec"]["replicas"] == 3, "the input is not changed"


def test_overlay_takes_live_values_and_drops_fields_live_does_not_have() -> None:
    desired = {"spec": {"replicas": 2, "template": {}}}
    live = {"spec": {"replicas": 7}}
    assert overlay(desired, live, ("/spec/replicas",)) == {"spec": {"replicas": 7, "template": {}}}
    assert overlay(desired, {}, ("/spec/replicas",)) == {"spec": {"template": {}}}
    assert overlay({}, live, ("/spec/replicas",)) == {"spec": {"replicas": 7}}

"""The applier against a real API server: staging, no-op detection, immutable fields."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fleetd.kube.client import connect
from fleetd.kube.discovery import Discovery
from fleetd.reconcile.apply import Applier, ApplyFailed, Desired
from fleetd.reconcile.plan import Planner
from testbed.bed import Spoke
from tests.integration.fleet import unique

pytestmark = pytest.mark.testbed


@pytest.fixture
async def applier(spokes: list[Spoke]) -> AsyncIterator[Applier]:
    spoke = spokes[0]
    async with await connect(spoke.name, spoke.kubeconfig) as client:
        yield Applier(Planner(client, Discovery(client)))


def deployment(name: str, ns: str, app: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }


def crd(group: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


def desired(*objs: dict[str, Any]) -> list[Desired]:
    return [Desired(obj=copy.deepcopy(o), origin=f"test#{i}") for i, o in enumerate(objs, 1)]


async def test_a_crd_namespace_and_custom_resource_apply_in_one_go_and_a_second_apply_changes_nothing(
    applier: Applier,
) -> None:
    group, ns = f"{unique('g')}.fleetd.test", unique("ns")
    gadget = {
        "apiVersion": f"{group}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g1", "namespace": ns},
        "spec": {"x": 1},
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    objs = desired(gadget, namespace, crd(group))
    first = await applier.apply(objs)
    assert {c.action for c in first} == {"created"}
    assert [c.ref.kind for c in first][:2] == ["CustomResourceDefinition", "Namespace"]
    second = await applier.apply(desired(gadget, namespace, crd(group)))
    assert {c.action for c in second} == {"unchanged"}


async def test_an_immutable_field_change_fails_clearly_and_applies_nothing(
    applier: Applier, namespace: str
) -> None:
    await applier.apply(desired(deployment("web", namespace, "one")))
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": namespace}}
    with pytest.raises(ApplyFailed) as failed:
        await applier.apply(desired(other, deployment("web", namespace, "two")))
    assert not failed.value.applied
    message = str(failed.value)
    assert f"Deployment.apps {namespace}/web (from test#2)" in message
    assert "immutable" in message
    assert "fleetd.dev/force: enabled" in message


async def test_an_immutable_field_change_recreates_the_object_when_it_opts_in(
    applier: Applier, namespace: str
) -> None:
    await applier.apply(desired(deployment("web", namespace, "one")))
    changes = await applier.apply(
        desired(deployment("web", namespace, "two", **{"fleetd.dev/force": "enabled"}))
    )
    assert [c.action for c in changes] == ["recreated"]

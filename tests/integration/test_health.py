"""Waiting for health on the full test bed, where controllers, a scheduler and kwok make workloads run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from fleetd.kube.client import KubeClient, connect
from fleetd.kube.discovery import Discovery
from fleetd.kube.objects import ObjRef
from fleetd.reconcile.health import Health, HealthFailed, HealthTimeout, wait_healthy
from testbed.bed import Spoke, TestBed
from tests.integration.fleet import eventually, get, put, unique

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(60)]
PAUSE = "registry.k8s.io/pause:3.10"


@pytest.fixture
def spoke(full_testbed: TestBed) -> Spoke:
    return full_testbed.spokes["full-a"]


@pytest.fixture
def ns(spoke: Spoke) -> Iterator[str]:
    name = f"h-{uuid.uuid4().hex[:10]}"
    spoke.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    spoke.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
async def client(spoke: Spoke) -> AsyncIterator[KubeClient]:
    async with await connect(spoke.name, spoke.kubeconfig) as kube:
        yield kube


def deployment(name: str, *, deadline: int = 600, pod_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": PAUSE}], **(pod_spec or {})},
            },
        },
    }


NO_SUCH_NODE = {"nodeSelector": {"fleetd.dev/no-such-node": "true"}}


async def create_deployment(spoke: Spoke, ns: str, body: dict[str, Any]) -> ObjRef:
    await put(spoke, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body)
    return ObjRef("apps", "Deployment", ns, body["metadata"]["name"])


async def rolling_out(spoke: Spoke, ref: ObjRef) -> bool:
    """The deployment controller has seen ``ref`` and says it is progressing."""
    live = await get(spoke, f"/apis/apps/v1/namespaces/{ref.namespace}/deployments/{ref.name}") or {}
    conditions = (live.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Progressing" and c.get("reason") == "ReplicaSetUpdated" for c in conditions)


async def test_a_deployment_that_becomes_available_is_current_along_with_its_service_and_configmap(
    spoke: Spoke, ns: str, client: KubeClient
) -> None:
    web = await create_deployment(spoke, ns, deployment("web"))
    await put(spoke, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "cfg"}})
    svc = {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    await put(spoke, "POST", f"/api/v1/namespaces/{ns}/services", svc)
    refs = [(web, "v1"), (ObjRef("", "ConfigMap", ns, "cfg"), "v1"), (ObjRef("", "Service", ns, "web"), "v1")]
    rounds: list[dict[ObjRef, Health]] = []

    healths = await wait_healthy(client, Discovery(client), refs, timeout=45, on_progress=rounds.append)

    assert healths[web] == Health("current", f"Deployment {ns}/web: 2 of 2 replicas updated and available")
    assert all(h.current for h in healths.values())
    assert rounds[-1] == healths


async def test_a_deployment_that_can_never_be_scheduled_fails_once_its_progress_deadline_passes(
    spoke: Spoke, ns: str, client: KubeClient
) -> None:
    stuck = await create_deployment(spoke, ns, deployment("stuck", deadline=5, pod_spec=NO_SUCH_NODE))
    started = time.monotonic()

    with pytest.raises(HealthFailed) as info:
        await wait_healthy(client, Discovery(client), [(stuck, "v1")], timeout=45)

    assert str(info.value).startswith(
        f"cluster full-a: Deployment {ns}/stuck failed: can no longer progress: ProgressDeadlineExceeded: "
        'ReplicaSet "stuck-'
    )
    assert str(info.value).endswith("has timed out progressing. (0 of 2 replicas available)")
    assert time.monotonic() - started < 30


async def test_a_deployment_still_within_its_deadline_times_out_naming_what_it_waits_for(
    spoke: Spoke, ns: str, client: KubeClient
) -> None:
    stuck = await create_deployment(spoke, ns, deployment("stuck", pod_spec=NO_SUCH_NODE))
    missing = ObjRef("", "ConfigMap", ns, "missing")
    await eventually(lambda: rolling_out(spoke, stuck), f"{stuck} to start rolling out")

    gets_before = client.requests["GET"]

    with pytest.raises(HealthTimeout) as info:
        await wait_healthy(client, Discovery(client), [(stuck, "v1"), (missing, "v1")], timeout=3)

    # Reads at 0, 0.5, 1.25 and 2.4 s: 4 rounds of 2 GETs, plus 2 for discovery.
    assert client.requests["GET"] - gets_before <= 10

    assert str(info.value) == (
        "cluster full-a: timed out after 3s waiting for 2 objects:\n"
        f"  ConfigMap {ns}/missing: not found (deleted, or not created yet)\n"
        f"  Deployment {ns}/stuck: 0 of 2 replicas available (Progressing: ReplicaSetUpdated)"
    )


async def test_cancelling_a_wait_stops_it_at_once(spoke: Spoke, ns: str, client: KubeClient) -> None:
    stuck = await create_deployment(spoke, ns, deployment("stuck", pod_spec=NO_SUCH_NODE))
    first_round = asyncio.Event()
    waiting = asyncio.create_task(
        wait_healthy(
            client, Discovery(client), [(stuck, "v1")], timeout=45, on_progress=lambda _: first_round.set()
        )
    )
    await asyncio.wait_for(first_round.wait(), 10)

    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 1)


async def test_a_job_past_its_active_deadline_fails_fast_with_the_reason(
    spoke: Spoke, ns: str, client: KubeClient
) -> None:
    pod = {"restartPolicy": "Never", "containers": [{"name": "app", "image": PAUSE}]}
    job = {
        "metadata": {"name": "migrate"},
        "spec": {"activeDeadlineSeconds": 1, "backoffLimit": 0, "template": {"spec": pod}},
    }
    await put(spoke, "POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job)
    started = time.monotonic()

    with pytest.raises(HealthFailed) as info:
        await wait_healthy(
            client, Discovery(client), [(ObjRef("batch", "Job", ns, "migrate"), "v1")], timeout=45
        )

    reason = "DeadlineExceeded: Job was active longer than specified deadline"
    assert str(info.value) == f"cluster full-a: Job {ns}/migrate failed: {reason}"
    assert time.monotonic() - started < 15


@pytest.fixture
def crd_group(spoke: Spoke) -> Iterator[str]:
    group = f"{unique('h')}.fleetd.test"
    yield group
    spoke.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.{group}")


async def test_a_new_crd_is_current_once_established(
    spoke: Spoke, crd_group: str, client: KubeClient
) -> None:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{crd_group}"},
        "spec": {
            "group": crd_group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }
    await put(spoke, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    ref = ObjRef("apiextensions.k8s.io", "CustomResourceDefinition", "", f"gadgets.{crd_group}")

    healths = await wait_healthy(client, Discovery(client), [(ref, "v1")], timeout=30)

    assert healths == {ref: Health("current", f"CustomResourceDefinition gadgets.{crd_group}: established")}

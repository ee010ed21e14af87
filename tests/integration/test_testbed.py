"""The test bed itself: real spokes, isolated from each other, reachable through fleetd's client."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from fleetd.kube.client import Forbidden, KubeClient, Unreachable, connect
from testbed.bed import Spoke, TestBed

pytestmark = pytest.mark.testbed


def _configmap(name: str, value: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"spoke": value}}


async def _roundtrip(spoke: Spoke, namespace: str) -> str:
    async with await connect(spoke.name, spoke.kubeconfig) as client:
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        await client.request("POST", path, body=_configmap("hello", spoke.name))
        got = await client.request("GET", f"{path}/hello")
        return str(got["data"]["spoke"])


async def test_three_spokes_each_store_and_return_their_own_object_concurrently(
    spokes: list[Spoke], namespace: str
) -> None:
    values = await asyncio.gather(*(_roundtrip(s, namespace) for s in spokes))
    assert values == [s.name for s in spokes]


async def test_spokes_share_etcd_but_not_objects(spokes: list[Spoke], namespace: str) -> None:
    first, second = spokes[0], spokes[1]
    async with await connect(first.name, first.kubeconfig) as client:
        await client.request(
            "POST", f"/api/v1/namespaces/{namespace}/configmaps", body=_configmap("only-a", "a")
        )
    async with await connect(second.name, second.kubeconfig) as client:
        listed = await client.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
    assert "only-a" not in {item["metadata"]["name"] for item in listed["items"]}


async def test_a_spokes_credentials_are_rejected_by_another_spoke(spokes: list[Spoke]) -> None:
    first, second = spokes[0], spokes[1]
    other = first.kubeconfig.read_text().replace(first.server, second.server)
    wrong = first.directory / "pointed-at-other.kubeconfig"
    wrong.write_text(other)
    async with await connect("crossed", wrong) as client:
        with pytest.raises(Unreachable, match="TLS"):
            await client.version()


async def test_viewer_user_can_read_but_not_write(spokes: list[Spoke], namespace: str) -> None:
    spoke = spokes[0]
    client: KubeClient
    async with await connect(spoke.name, spoke.viewer_kubeconfig) as client:
        await client.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
        assert not await client.can_i("create", "", "configmaps", namespace)
        with pytest.raises(Forbidden, match="fleetd-viewer"):
            await client.request(
                "POST", f"/api/v1/namespaces/{namespace}/configmaps", body=_configmap("x", "y")
            )


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_stopped_spoke_frees_its_port_and_comes_back_with_its_data(
    spare_spoke: Spoke, testbed: TestBed
) -> None:
    spare_spoke.request("POST", "/api/v1/namespaces/default/configmaps", _configmap("kept", "yes"))
    testbed.stop_spoke(spare_spoke.name)
    assert not _port_open(spare_spoke.port)
    testbed.start_spoke(spare_spoke.name)
    assert spare_spoke.request("GET", "/api/v1/namespaces/default/configmaps/kept")["data"] == {
        "spoke": "yes"
    }


def test_stopping_a_bed_leaves_no_process_and_no_files() -> None:
    bed = TestBed(["lonely"]).start()
    spoke = bed.spokes["lonely"]
    pids = bed.pids()
    bed.stop()
    bed.stop()  # idempotent
    assert not bed.workdir.exists()
    assert not _port_open(spoke.port)
    for pid in pids:
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _deployment(name: str) -> dict[str, object]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }


def test_full_profile_makes_a_deployment_available(full_testbed: TestBed) -> None:
    spoke = full_testbed.spokes["full-a"]
    spoke.request("POST", "/apis/apps/v1/namespaces/default/deployments", _deployment("web"))
    deadline = time.monotonic() + 90
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        status = spoke.request("GET", "/apis/apps/v1/namespaces/default/deployments/web").get("status", {})
        if status.get("availableReplicas") == 2:
            return
        time.sleep(0.5)
    pytest.fail(f"deployment never became available: {status}")

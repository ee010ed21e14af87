"""Fencing: a closed write guard stops every kind of write, and a replica cut off from the
management cluster closes its guards before anyone could take its clusters over.

The first test drives fleetd's own write paths (applier, ledger store, prune,
drift correction) with a guard that says no, against a real API server. The
second runs a sharded daemon in the test's loop and stops its management API
server: the guard must close within ``lease_duration - renew_period`` of the
last renewal, the hand edit made meanwhile must stay, and once the management
cluster is back the replica takes its cluster again and corrects it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from fleetd.inventory import DriftPolicy
from fleetd.kube.client import connect
from fleetd.kube.discovery import Discovery
from fleetd.kube.objects import Entry, ref_of
from fleetd.reconcile.apply import Applier, Desired
from fleetd.reconcile.desired import owned
from fleetd.reconcile.drift import DriftTracker, managed_from
from fleetd.reconcile.guard import Fenced, unguarded
from fleetd.reconcile.ledger import Ledger, LedgerStore
from fleetd.reconcile.plan import Planner
from fleetd.reconcile.prune import prune
from testbed.bed import Spoke, TestBed
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, put, running, unique, write_fleet
from tests.integration.replicas import LEASE_NAMESPACE

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(90)]

FLEET, SYNC = "fenced", "apps"


def closed() -> None:
    raise Fenced("test: this replica does not hold the cluster's Lease")


def _configmap(name: str, namespace: str, value: str) -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}
    return owned({**obj, "data": {"v": value}}, FLEET, SYNC)


async def test_a_closed_guard_stops_apply_ledger_prune_and_drift_correction_and_nothing_is_written(
    spokes: list[Spoke], namespace: str
) -> None:
    spoke = spokes[0]
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    async with await connect(spoke.name, spoke.kubeconfig) as client:
        planner = Planner(client, Discovery(client))
        fenced, free = Applier(planner, guard=closed), Applier(planner, guard=unguarded)
        with pytest.raises(Fenced):
            await fenced.apply([Desired(obj=_configmap("new", namespace, "1"), origin="test")])
        assert await get(spoke, f"{path}/new") is None
        with pytest.raises(Fenced):
            await LedgerStore(client, FLEET, guard=closed).write(
                Ledger(sync=SYNC, revision="r", prune=True, entries=frozenset(), cluster=spoke.name)
            )
        assert await get(spoke, f"/api/v1/namespaces/fleetd-system/configmaps/{FLEET}.{SYNC}") is None
        kept = Desired(obj=_configmap("kept", namespace, "git"), origin="test")
        changes = await free.apply([kept])
        entry = Entry(ref_of(changes[0].result), "v1")
        with pytest.raises(Fenced):
            await prune(client, planner.discovery, [entry], fleet=FLEET, sync=SYNC, guard=closed)
        assert await get(spoke, f"{path}/kept") is not None
        async with asyncio.TaskGroup() as tasks:
            tracker = DriftTracker(fleet=FLEET, client=client, applier=fenced, lock=asyncio.Lock())
            tracker.start(tasks)
            tracker.register(SYNC, managed_from(SYNC, DriftPolicy.CORRECT, changes, {"test": kept.obj}))
            await eventually(lambda: _vouched(tracker), "the drift watch established")
            live = await get(spoke, f"{path}/kept")
            assert live is not None
            await put(spoke, "PUT", f"{path}/kept", {**live, "data": {"v": "by hand"}})
            await asyncio.sleep(1.0)  # an observation window: an unfenced tracker corrects in ~0.1 s
            assert (await get(spoke, f"{path}/kept") or {}).get("data") == {"v": "by hand"}
            assert tracker.managed, "the tracker keeps running after a fenced correction"
            tracker.stop()


async def _vouched(tracker: DriftTracker) -> bool:
    return tracker.vouches_for(SYNC)


async def test_a_replica_cut_off_from_the_management_cluster_stops_writing_before_its_lease_can_expire(
    spokes: list[Spoke], spare_spoke: Spoke, testbed: TestBed, namespace: str, tmp_path: Path
) -> None:
    management, spoke = spare_spoke, spokes[0]
    leases = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}
    management.request("POST", "/api/v1/namespaces", leases)
    duration, period = 3, 1.0
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"v": "git"})})
    revision = repo.commit("one ConfigMap")
    sharding = (
        f'\n[fleet.sharding]\nkubeconfig = "{management.kubeconfig}"\nnamespace = "{LEASE_NAMESPACE}"\n'
        f'identity = "solo"\nlease_duration = "{duration}s"\nrenew_period = "{period}s"\n'
    )
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig}, name=unique("cut"),
        syncs=[{"name": "apps", "path": "apps"}], fleet_extra=sharding,
    )  # fmt: skip
    path = f"/api/v1/namespaces/{namespace}/configmaps/cm"
    async with running(config) as daemon:
        shard = daemon.shard
        assert shard is not None

        async def serving() -> bool:
            status = daemon.state.status(spoke.name, "apps")
            return shard.may_write(spoke.name) and status is not None and status.revision == revision

        await eventually(serving, "the replica serves its cluster")
        # Off the loop: the daemon under test shares it, and must keep running meanwhile.
        stopping = asyncio.create_task(asyncio.to_thread(testbed.stop_spoke, management.name))

        async def fenced() -> bool:
            return not shard.may_write(spoke.name)

        await eventually(fenced, "the guard closes", timeout=duration + 10)
        closed_after = time.monotonic() - shard.member.renewed_at
        await stopping
        print(f"\nmanagement cluster gone: guard closed {closed_after:.2f}s after the last renewal was sent")
        # Closed when the renewal's validity ended (polling adds up to 0.5 s), well before anyone else
        # may take over: that needs a whole lease duration without a renewal.
        assert duration - period <= closed_after <= duration - period + 0.5
        live = await get(spoke, path)
        assert live is not None
        await put(spoke, "PUT", path, {**live, "data": {"v": "by hand"}})
        await asyncio.sleep(1.0)  # an observation window: a replica that still wrote would correct it
        assert (await get(spoke, path) or {}).get("data") == {"v": "by hand"}
        await asyncio.to_thread(testbed.start_spoke, management.name)

        async def corrected() -> bool:
            return (await get(spoke, path) or {}).get("data") == {"v": "git"}

        await eventually(corrected, "the replica rejoins, takes its cluster back and corrects it", timeout=30)


async def test_a_cluster_removed_from_a_sharded_fleet_is_pruned_by_its_owner_under_its_lease(
    spokes: list[Spoke], spare_spoke: Spoke, namespace: str, tmp_path: Path
) -> None:
    management, spoke = spare_spoke, spokes[1]
    leases = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}
    management.request("POST", "/api/v1/namespaces", leases)
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"v": "git"})})
    revision = repo.commit("one ConfigMap")
    sharding = (
        f'\n[fleet.sharding]\nkubeconfig = "{management.kubeconfig}"\nnamespace = "{LEASE_NAMESPACE}"\n'
        'identity = "solo"\nlease_duration = "3s"\nrenew_period = "1s"\n'
    )
    name = unique("gone")
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig}, name=name,
        syncs=[{"name": "apps", "path": "apps"}], fleet_extra=sharding,
    )  # fmt: skip
    config.write_text(
        config.read_text().replace(
            "[fleet]\n", '[fleet]\nprune_removed_clusters = true\nprune_grace = "1s"\n'
        )
    )
    lease = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}.cluster.{spoke.name}"
    async with running(config) as daemon:

        async def ready() -> bool:
            status = daemon.state.status(spoke.name, "apps")
            return status is not None and status.revision == revision and status.result == "ready"

        await eventually(ready, "the replica serves its cluster")
        assert await get(management, lease) is not None
        (config.parent / f"{spoke.name}.toml").unlink()
        assert await daemon.reload()

        async def pruned_and_released() -> bool:
            gone = await get(spoke, f"/api/v1/namespaces/{namespace}/configmaps/cm") is None
            return gone and await get(management, lease) is None

        await eventually(
            pruned_and_released, "the removed cluster pruned, then its Lease deleted", timeout=30
        )


async def test_a_replica_whose_management_kubeconfig_is_missing_serves_nothing_says_why_and_keeps_running(
    tmp_path: Path,
) -> None:
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", "default", {"v": "git"})})
    repo.commit("one ConfigMap")
    sharding = f'\n[fleet.sharding]\nkubeconfig = "{tmp_path / "missing.kubeconfig"}"\nidentity = "lost"\n'
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={"edge": tmp_path / "edge.kubeconfig"}, name=unique("lost"),
        syncs=[{"name": "apps", "path": "apps"}], fleet_extra=sharding,
    )  # fmt: skip
    async with running(config) as daemon:

        async def explained() -> bool:
            shard = daemon.state.shard
            return shard is not None and "missing.kubeconfig" in (shard.error or "")

        await eventually(explained, "the status says why the replica serves nothing")
        doc = daemon.status_document()
        assert doc["sharding"]["member"] is False
        assert doc["sharding"]["owned"] == []
        assert daemon.healthy()
        assert daemon.workers["edge"].reconciler is None  # no worker runs for a cluster it does not own

"""Ordering and health: waiting for workloads, depends_on, and rollout waves across clusters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetd.cli.status import rollout_lines
from fleetd.daemon.root import Daemon
from testbed.bed import Spoke, TestBed
from tests.gitrepo import WorkRepo
from tests.integration.fleet import (
    configmap,
    deployment,
    eventually,
    get,
    namespace_doc,
    running,
    unique,
    write_fleet,
)

pytestmark = pytest.mark.testbed


def unschedulable(name: str, ns: str, deadline: int = 600) -> str:
    doc = json.loads(deployment(name, ns))
    doc["spec"]["progressDeadlineSeconds"] = deadline
    doc["spec"]["template"]["spec"]["nodeSelector"] = {"no-such-node": "anywhere"}
    return json.dumps(doc)


async def status_of(daemon: Daemon, cluster: str, sync: str, result: str, revision: str | None = None) -> str:
    async def check() -> bool:
        s = daemon.state.status(cluster, sync)
        return s is not None and s.result == result and (revision is None or s.revision == revision)

    await eventually(check, f"{cluster}/{sync} {result}", timeout=60)
    return daemon.state.statuses[(cluster, sync)].error or ""


@pytest.fixture
def full(full_testbed: TestBed) -> Spoke:
    return full_testbed.spokes["full-a"]


async def test_a_deployment_that_becomes_available_makes_its_waiting_sync_ready(
    full: Spoke, tmp_path: Path
) -> None:
    ns = unique("healthy")
    repo = WorkRepo(tmp_path / "repo").write(
        {"w/ns.yaml": namespace_doc(ns), "w/web.yaml": deployment("web", ns)}
    )
    rev = repo.commit("healthy")
    sync = {"name": "w", "path": "w", "wait": True, "timeout": "60s"}
    config = write_fleet(tmp_path, repo=repo.path, clusters={full.name: full.kubeconfig}, syncs=[sync])
    async with running(config) as daemon:
        await status_of(daemon, full.name, "w", "ready", rev)
        web = await get(full, f"/apis/apps/v1/namespaces/{ns}/deployments/web") or {}
        assert web["status"]["availableReplicas"] == 2


async def test_a_deployment_that_never_becomes_available_times_out_naming_object_and_reason(
    full: Spoke, tmp_path: Path
) -> None:
    ns = unique("stuck")
    repo = WorkRepo(tmp_path / "repo").write(
        {"w/ns.yaml": namespace_doc(ns), "w/web.yaml": unschedulable("web", ns)}
    )
    rev = repo.commit("stuck")
    sync = {"name": "w", "path": "w", "wait": True, "timeout": "6s"}
    config = write_fleet(tmp_path, repo=repo.path, clusters={full.name: full.kubeconfig}, syncs=[sync])
    async with running(config) as daemon:
        error = await status_of(daemon, full.name, "w", "failed", rev)
    assert "timed out" in error
    assert f"Deployment {ns}/web" in error
    assert "0 of 2" in error


async def test_depends_on_holds_apps_back_until_infrastructure_is_ready(full: Spoke, tmp_path: Path) -> None:
    ns = unique("layers")
    repo = WorkRepo(tmp_path / "repo").write(
        {
            "infra/ns.yaml": namespace_doc(ns),
            "infra/db.yaml": unschedulable("db", ns, deadline=3),
            "apps/cm.yaml": configmap("app", ns, {"uses": "db"}),
        }
    )
    broken = repo.commit("db cannot start")
    syncs: list[dict[str, Any]] = [
        {"name": "infra", "path": "infra", "wait": True, "timeout": "60s"},
        {"name": "apps", "path": "apps", "depends_on": ["infra"]},
    ]
    config = write_fleet(tmp_path, repo=repo.path, clusters={full.name: full.kubeconfig}, syncs=syncs)
    async with running(config) as daemon:
        error = await status_of(daemon, full.name, "infra", "failed", broken)
        assert "ProgressDeadlineExceeded" in error or "can no longer progress" in error
        waiting = await status_of(daemon, full.name, "apps", "waiting", broken)
        assert waiting == "waiting for infra to be ready"
        assert await get(full, f"/api/v1/namespaces/{ns}/configmaps/app") is None
        repo.write({"infra/db.yaml": deployment("db", ns)})
        fixed = repo.commit("db can start")
        daemon.trigger_fetch()
        await status_of(daemon, full.name, "apps", "ready", fixed)
        assert await get(full, f"/api/v1/namespaces/{ns}/configmaps/app") is not None


async def values(spokes: list[Spoke], ns: str) -> list[str | None]:
    out = []
    for spoke in spokes:
        cm = await get(spoke, f"/api/v1/namespaces/{ns}/configmaps/release")
        out.append(None if cm is None else cm["data"]["release"])
    return out


async def test_a_wave_rollout_stops_at_a_failing_first_wave_and_continues_after_the_fix(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    ns = unique("waves")
    canary, middle, last = spokes
    repo = WorkRepo(tmp_path / "repo").write(
        {"r/ns.yaml": namespace_doc(ns), "r/cm.yaml": configmap("release", ns, {"release": "1"})}
    )
    first = repo.commit("release 1")
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={s.name: s.kubeconfig for s in spokes},
        syncs=[{"name": "r", "path": "r"}],
        waves={canary.name: 0, middle.name: 1, last.name: 2},
        # Release 2 needs ${region}: the canary lacks it, so release 2 fails there first.
        variables={middle.name: {"region": "eu"}, last.name: {"region": "us"}},
    )
    async with running(config) as daemon:
        for spoke in spokes:
            await status_of(daemon, spoke.name, "r", "ready", first)
        repo.write({"r/cm.yaml": configmap("release", ns, {"release": "2", "region": "${region}"})})
        second = repo.commit("release 2 needs a region")
        daemon.trigger_fetch()
        error = await status_of(daemon, canary.name, "r", "failed", second)
        assert "region" in error
        rollout = daemon.status_document()["rollout"]
        assert rollout["halted_at_wave"] == 0
        assert rollout["waves"] == {"0": second, "1": first, "2": first}
        assert rollout_lines(daemon.fleet, daemon.state.store) == [
            f"rollout: wave 0 at {second[:12]}, wave 1 at {first[:12]}, wave 2 at {first[:12]}"
        ]
        assert await values(spokes, ns) == ["1", "1", "1"]
        assert daemon.state.statuses[(middle.name, "r")].revision == first

        repo.write({"r/cm.yaml": configmap("release", ns, {"release": "3", "region": "${region:=none}"})})
        third = repo.commit("release 3: the region has a default")
        daemon.trigger_fetch()
        for spoke in spokes:
            await status_of(daemon, spoke.name, "r", "ready", third)
        assert await values(spokes, ns) == ["3", "3", "3"]
        order = [daemon.state.statuses[(s.name, "r")].succeeded_at or 0 for s in spokes]
        assert order == sorted(order), "waves went out of order"
        assert daemon.status_document()["rollout"]["reached_wave"] == 2

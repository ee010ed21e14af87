"""The sync engine end to end: a real git repository, three real spokes, a daemon in the loop."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleetd.daemon.root import Daemon
from fleetd.kube.objects import LABEL_SYNC
from fleetd.reconcile.ledger import SYSTEM_NAMESPACE
from testbed.bed import Spoke, TestBed
from testbed.build import toolset
from tests.gitrepo import WorkRepo
from tests.integration.fleet import (
    configmap,
    deployment,
    eventually,
    get,
    namespace_doc,
    put,
    running,
    unique,
    write_fleet,
)

pytestmark = pytest.mark.testbed


def cm_path(ns: str, name: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps/{name}"


def deploy_path(ns: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"


async def data_of(spoke: Spoke, ns: str, name: str) -> dict[str, str] | None:
    obj = await get(spoke, cm_path(ns, name))
    return None if obj is None else dict(obj.get("data") or {})


async def until_everywhere(spokes: list[Spoke], ns: str, name: str, data: dict[str, str] | None) -> None:
    async def check() -> bool:
        return all([await data_of(s, ns, name) == data for s in spokes])

    await eventually(check, f"ConfigMap {ns}/{name} == {data} on {[s.name for s in spokes]}")


async def until_status(daemon: Daemon, cluster: str, sync: str, result: str, revision: str) -> None:
    async def check() -> bool:
        s = daemon.state.status(cluster, sync)
        return s is not None and s.result == result and s.revision == revision

    await eventually(check, f"{cluster}/{sync} {result} at {revision[:12]}")


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    return WorkRepo(tmp_path / "repo")


async def test_commits_reach_every_spoke_changes_follow_and_removed_manifests_are_pruned(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path
) -> None:
    ns = unique("apps")
    repo.write(
        {
            "apps/ns.yaml": namespace_doc(ns),
            "apps/settings.yaml": configmap("settings", ns, {"colour": "blue", "cluster": "${cluster_name}"}),
            "apps/web.yaml": deployment("web", ns),
            "apps/keep.yaml": configmap("keep", ns, {"x": "1"}, annotations={"fleetd.dev/prune": "disabled"}),
            "apps/README.md": "not a manifest",
        }
    )
    first = repo.commit("first")
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={s.name: s.kubeconfig for s in spokes},
        syncs=[{"name": "apps", "path": "apps"}],
    )
    async with running(config) as daemon:
        for spoke in spokes:
            await until_status(daemon, spoke.name, "apps", "ready", first)
            assert await data_of(spoke, ns, "settings") == {"colour": "blue", "cluster": spoke.name}
            web = await get(spoke, deploy_path(ns, "web"))
            assert web is not None
            assert web["metadata"]["labels"][LABEL_SYNC] == "apps"
        # an object fleetd did not create, in the same namespace, must survive every prune
        stranger = configmap("stranger", ns, {"mine": "yes"})
        for spoke in spokes:
            await put(spoke, "POST", f"/api/v1/namespaces/{ns}/configmaps", json.loads(stranger))

        repo.write(
            {
                "apps/settings.yaml": configmap(
                    "settings", ns, {"colour": "green", "cluster": "${cluster_name}"}
                )
            }
        )
        repo.remove("apps/web.yaml", "apps/keep.yaml")
        second = repo.commit("second: recolour, drop web and keep")
        daemon.trigger_fetch()
        for spoke in spokes:
            await until_status(daemon, spoke.name, "apps", "ready", second)
            assert await data_of(spoke, ns, "settings") == {"colour": "green", "cluster": spoke.name}
            assert await get(spoke, deploy_path(ns, "web")) is None or (
                (await get(spoke, deploy_path(ns, "web")) or {}).get("metadata", {}).get("deletionTimestamp")
            )
            assert await data_of(spoke, ns, "keep") == {"x": "1"}, "protected object was pruned"
            assert await data_of(spoke, ns, "stranger") == {"mine": "yes"}, "unlabelled object was pruned"
            ledger = await get(spoke, cm_path(SYSTEM_NAMESPACE, f"{daemon.fleet.name}.apps"))
            assert ledger is not None
            assert "web" not in ledger["data"]["entries"]
            assert ledger["data"]["revision"] == second


async def test_a_stopped_spoke_does_not_hold_back_the_others_and_catches_up(
    spokes: list[Spoke], spare_spoke: Spoke, testbed: TestBed, repo: WorkRepo, tmp_path: Path
) -> None:
    ns = unique("edge")
    repo.write({"base/ns.yaml": namespace_doc(ns), "base/cm.yaml": configmap("cm", ns, {"v": "1"})})
    repo.commit("one")
    members = [*spokes[:2], spare_spoke]
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={s.name: s.kubeconfig for s in members},
        syncs=[{"name": "base", "path": "base"}],
    )
    async with running(config) as daemon:
        await until_everywhere(members, ns, "cm", {"v": "1"})
        testbed.stop_spoke(spare_spoke.name)
        repo.write({"base/cm.yaml": configmap("cm", ns, {"v": "2"})})
        two = repo.commit("two")
        daemon.trigger_fetch()
        await until_everywhere(spokes[:2], ns, "cm", {"v": "2"})
        await until_status(daemon, spare_spoke.name, "base", "failed", two)
        assert "unreachable" in (daemon.state.statuses[(spare_spoke.name, "base")].error or "")
        testbed.start_spoke(spare_spoke.name)
        daemon.trigger(spare_spoke.name)
        await until_everywhere([spare_spoke], ns, "cm", {"v": "2"})


async def test_a_broken_manifest_fails_its_sync_alone_applying_and_pruning_nothing(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path
) -> None:
    ns = unique("mixed")
    repo.write(
        {
            "infra/ns.yaml": namespace_doc(ns),
            "apps/old.yaml": configmap("old", ns, {"v": "1"}),
            "other/ok.yaml": configmap("other", ns, {"v": "1"}),
        }
    )
    repo.commit("good")
    syncs: list[dict[str, Any]] = [
        {"name": "infra", "path": "infra"},
        {"name": "apps", "path": "apps", "depends_on": ["infra"]},
        {"name": "other", "path": "other", "depends_on": ["infra"]},
    ]
    clusters = {s.name: s.kubeconfig for s in spokes}
    config = write_fleet(tmp_path, repo=repo.path, clusters=clusters, syncs=syncs)
    async with running(config) as daemon:
        await until_everywhere(spokes, ns, "old", {"v": "1"})
        repo.remove("apps/old.yaml")
        bad = deployment("bad", ns).replace('"replicas": 2', '"replicas": "two"')
        repo.write({"apps/new.yaml": configmap("new", ns, {"v": "1"}), "apps/bad.yaml": bad})
        repo.write({"other/ok.yaml": configmap("other", ns, {"v": "2"})})
        broken = repo.commit("broken deployment, new configmap, old removed")
        daemon.trigger_fetch()
        for spoke in spokes:
            await until_status(daemon, spoke.name, "apps", "failed", broken)
            await until_status(daemon, spoke.name, "other", "ready", broken)
        error = daemon.state.statuses[(spokes[0].name, "apps")].error or ""
        assert "apps/bad.yaml" in error
        assert f"Deployment.apps {ns}/bad" in error
        for spoke in spokes:
            assert await data_of(spoke, ns, "new") is None, "a sync with a broken manifest applied something"
            assert await data_of(spoke, ns, "old") == {"v": "1"}, "a failed sync pruned"
            assert await data_of(spoke, ns, "other") == {"v": "2"}


# What a person does in `kubectl edit`: change a value and add a label.
EDITOR_SCRIPT = """
import sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path))
doc["data"]["colour"] = "red"
doc["metadata"].setdefault("labels", {})["added-by-hand"] = "yes"
open(path, "w").write(yaml.safe_dump(doc))
"""


def kubectl(spoke: Spoke, *args: str, editor: str | None = None) -> None:
    env = {**os.environ, **({"KUBE_EDITOR": editor} if editor else {})}
    argv = [str(toolset().path("kubectl")), "--kubeconfig", str(spoke.kubeconfig), *args]
    subprocess.run(argv, check=True, capture_output=True, env=env, timeout=30)


async def test_kubectl_scale_and_edit_are_reverted_on_the_next_reconcile(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path
) -> None:
    ns = unique("drift")
    repo.write(
        {
            "apps/ns.yaml": namespace_doc(ns),
            "apps/web.yaml": deployment("web", ns, replicas=2),
            "apps/cm.yaml": configmap("cm", ns, {"colour": "blue"}),
        }
    )
    rev = repo.commit("drift targets")
    spoke = spokes[0]
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={spoke.name: spoke.kubeconfig},
        syncs=[{"name": "apps", "path": "apps", "drift": "ignore"}],  # the watch must not beat the reconcile
    )
    async with running(config) as daemon:
        await until_status(daemon, spoke.name, "apps", "ready", rev)
        await asyncio.to_thread(kubectl, spoke, "-n", ns, "scale", "deployment/web", "--replicas=5")
        editor = tmp_path / "edit.py"
        editor.write_text(EDITOR_SCRIPT)
        edit = f"{sys.executable} {editor}"
        await asyncio.to_thread(kubectl, spoke, "-n", ns, "edit", "configmap/cm", editor=edit)
        edited = await get(spoke, cm_path(ns, "cm")) or {}
        assert edited["data"] == {"colour": "red"}
        assert edited["metadata"]["labels"].get("added-by-hand") == "yes"
        assert ((await get(spoke, deploy_path(ns, "web"))) or {})["spec"]["replicas"] == 5

        daemon.trigger(spoke.name)

        async def reverted() -> bool:
            cm = await get(spoke, cm_path(ns, "cm")) or {}
            web = await get(spoke, deploy_path(ns, "web")) or {}
            return (
                cm.get("data") == {"colour": "blue"}
                and "added-by-hand" not in cm["metadata"]["labels"]
                and web["spec"]["replicas"] == 2
            )

        await eventually(reverted, "kubectl scale and edit reverted")


async def test_a_restarted_daemon_on_an_unchanged_revision_writes_nothing(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path
) -> None:
    ns = unique("calm")
    repo.write(
        {
            "apps/ns.yaml": namespace_doc(ns),
            "apps/web.yaml": deployment("web", ns),
            "apps/cm.yaml": configmap("cm", ns, {"k": "v"}),
        }
    )
    rev = repo.commit("calm")
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={s.name: s.kubeconfig for s in spokes},
        syncs=[{"name": "apps", "path": "apps"}],
    )
    paths = [f"/api/v1/namespaces/{ns}", cm_path(ns, "cm"), deploy_path(ns, "web")]

    async def versions(daemon: Daemon) -> dict[tuple[str, str], str]:
        out = {}
        for spoke in spokes:
            for path in [*paths, cm_path(SYSTEM_NAMESPACE, f"{daemon.fleet.name}.apps")]:
                obj = await get(spoke, path) or {}
                out[(spoke.name, path)] = obj["metadata"]["resourceVersion"]
        return out

    async with running(config) as daemon:
        for spoke in spokes:
            await until_status(daemon, spoke.name, "apps", "ready", rev)
        before = await versions(daemon)
        first_attempts = {s.name: daemon.state.statuses[(s.name, "apps")].attempted_at for s in spokes}
    async with running(config) as daemon:
        daemon.trigger()  # force a full reconcile, not only a status read

        async def reconciled_again() -> bool:
            st = {s.name: daemon.state.status(s.name, "apps") for s in spokes}
            return all(
                v is not None and v.attempted_at > first_attempts[k] and v.result == "ready"
                for k, v in st.items()
            )

        await eventually(reconciled_again, "a second reconcile after the restart")
        assert all(daemon.state.statuses[(s.name, "apps")].changed == 0 for s in spokes)
        assert await versions(daemon) == before


async def test_moving_a_sync_to_another_cluster_leaves_no_orphans(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path
) -> None:
    ns = unique("moved")
    repo.write({"apps/ns.yaml": namespace_doc(ns), "apps/cm.yaml": configmap("cm", ns, {"v": "1"})})
    rev = repo.commit("movable")
    first, second = spokes[0], spokes[1]
    name = unique("fleet")
    sync = [{"name": "apps", "path": "apps"}]
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={first.name: first.kubeconfig}, syncs=sync, name=name
    )
    async with running(config) as daemon:
        await until_status(daemon, first.name, "apps", "ready", rev)
    # The operator moves the sync: the first cluster keeps no syncs, the second gets it.
    (config.parent / f"{first.name}.toml").write_text(f'[cluster]\nkubeconfig = "{first.kubeconfig}"\n')
    (config.parent / f"{second.name}.toml").write_text(
        f'[cluster]\nkubeconfig = "{second.kubeconfig}"\n\n[[syncs]]\nname = "apps"\npath = "apps"\n'
    )
    async with running(config) as daemon:
        await until_status(daemon, second.name, "apps", "ready", rev)
        daemon.trigger(first.name)

        async def orphans_gone() -> bool:
            ledger = await get(first, cm_path(SYSTEM_NAMESPACE, f"{name}.apps"))
            return ledger is None and await data_of(first, ns, "cm") is None

        await eventually(orphans_gone, "the first cluster's copy pruned and its ledger removed")
        assert await data_of(second, ns, "cm") == {"v": "1"}

"""fleetd cannot be talked into destroying what should stay.

On the real test bed: two cluster files on one API server, a commit that
empties a sync or prunes most of it, one object claimed by two syncs, git
writing into the reserved namespace, a daemon killed with SIGKILL in the
middle of an apply, and a hand edit right after a restart.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetd.daemon.events import EventKind
from fleetd.daemon.root import Daemon
from fleetd.reconcile.ledger import SYSTEM_NAMESPACE
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, put, running, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(240)]


def cm(ns: str, name: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps/{name}"


async def status_is(
    daemon: Daemon, cluster: str, sync: str, result: str, revision: str | None = None
) -> bool:
    st = daemon.state.status(cluster, sync)
    return st is not None and st.result == result and (revision is None or st.revision == revision)


async def until(daemon: Daemon, cluster: str, sync: str, result: str, revision: str | None = None) -> str:
    await eventually(lambda: status_is(daemon, cluster, sync, result, revision), f"{cluster}/{sync} {result}")
    return daemon.state.status(cluster, sync).error or ""  # type: ignore[union-attr]


async def present(spoke: Spoke, ns: str, *names: str) -> list[str]:
    return [n for n in names if await get(spoke, cm(ns, n)) is not None]


# -- cluster identity --------------------------------------------------------------------------------


async def test_two_cluster_files_on_one_api_server_refuse_the_second_and_prune_nothing_by_mistake(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    spoke = spokes[0]
    repo = WorkRepo(tmp_path / "repo")
    repo.write({"apps/a.yaml": configmap("a", namespace, {}), "apps/b.yaml": configmap("b", namespace, {})})
    repo.commit("a and b")
    twin = tmp_path / "twin.kubeconfig"
    twin.write_text(spoke.kubeconfig.read_text())  # a copy-paste: another file, the same API server
    clusters = {spoke.name: spoke.kubeconfig, "twin": twin}
    config = write_fleet(
        tmp_path, repo=repo.path, clusters=clusters, syncs=[{"name": "apps", "path": "apps"}]
    )
    async with running(config) as daemon:

        async def one_of_each() -> bool:
            results = sorted(
                str(st.result)
                for c in (spoke.name, "twin")
                if (st := daemon.state.status(c, "apps")) is not None
            )
            return results == ["failed", "ready"]

        await eventually(one_of_each, "one cluster ready, its twin refused")
        refused = "twin" if await status_is(daemon, "twin", "apps", "failed") else spoke.name
        holder = spoke.name if refused == "twin" else "twin"
        error = daemon.state.status(refused, "apps").error or ""  # type: ignore[union-attr]
        assert f"same Kubernetes cluster as {holder}" in error
        assert "Remove one of them" in error
        repo.remove("apps/b.yaml")
        second = repo.commit("b leaves git")
        daemon.trigger_fetch()
        await until(daemon, holder, "apps", "ready", second)
        await asyncio.sleep(2)  # give a refused twin the chance to fight: it must not
        assert await present(spoke, namespace, "a", "b") == ["a"]
        assert await status_is(daemon, refused, "apps", "failed")
        assert daemon.state.identities[holder]


# -- the deletion budget -----------------------------------------------------------------------------


async def test_a_commit_emptying_a_sync_is_held_until_an_operator_allows_it(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    spoke = spokes[1]
    repo = WorkRepo(tmp_path / "repo")
    repo.write({f"apps/{n}.yaml": configmap(n, namespace, {}) for n in ("a", "b", "c")})
    repo.write({"keep/k.yaml": configmap("k", namespace, {})})
    first = repo.commit("three ConfigMaps")
    syncs = [{"name": "apps", "path": "apps"}, {"name": "keep", "path": "keep"}]
    config = write_fleet(tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig}, syncs=syncs)
    async with running(config) as daemon:
        await until(daemon, spoke.name, "apps", "ready", first)
        for name in ("a", "b", "c"):
            repo.remove(f"apps/{name}.yaml")
        repo.write({"apps/README.md": "nothing here any more\n"})
        emptied = repo.commit("empty the sync by mistake")
        daemon.trigger_fetch()
        error = await until(daemon, spoke.name, "apps", "held", emptied)
        assert "would empty the sync" in error
        assert "fleetd prune --allow" in error
        assert emptied[:12] in error
        held = daemon.state.events(cluster=spoke.name, sync="apps", kinds=(str(EventKind.PRUNE_HELD),))
        assert held
        assert held[-1].revision == emptied
        daemon.trigger(spoke.name, "apps")  # a later reconcile of the same revision stays held
        await asyncio.sleep(1)
        assert await present(spoke, namespace, "a", "b", "c") == ["a", "b", "c"]
        daemon.allow_prune(spoke.name, "apps")
        await until(daemon, spoke.name, "apps", "ready", emptied)
        assert await present(spoke, namespace, "a", "b", "c") == []
        assert await present(spoke, namespace, "k") == ["k"]


async def test_pruning_more_than_the_budget_is_held_and_within_it_is_not(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    spoke = spokes[2]
    names = [f"c{i}" for i in range(6)]
    repo = WorkRepo(tmp_path / "repo")
    repo.write({f"apps/{n}.yaml": configmap(n, namespace, {}) for n in names})
    first = repo.commit("six")
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig},
        syncs=[{"name": "apps", "path": "apps", "max_prune": "50%"}],
    )  # fmt: skip
    async with running(config) as daemon:
        await until(daemon, spoke.name, "apps", "ready", first)
        repo.remove("apps/c0.yaml", "apps/c1.yaml")
        within = repo.commit("two of six: within 50%")
        daemon.trigger_fetch()
        await until(daemon, spoke.name, "apps", "ready", within)
        assert await present(spoke, namespace, *names) == names[2:]
        repo.remove("apps/c2.yaml", "apps/c3.yaml", "apps/c4.yaml")
        over = repo.commit("three of four: over 50%")
        daemon.trigger_fetch()
        error = await until(daemon, spoke.name, "apps", "held", over)
        assert "prune 3 of its 4 objects" in error
        assert "50% of its objects" in error
        assert await present(spoke, namespace, *names) == names[2:]
        repo.write(
            {"apps/c2.yaml": configmap("c2", namespace, {}), "apps/c3.yaml": configmap("c3", namespace, {})}
        )
        back = repo.commit("c2 and c3 are back: one of four goes")
        daemon.trigger_fetch()
        await until(daemon, spoke.name, "apps", "ready", back)
        assert await present(spoke, namespace, *names) == ["c2", "c3", "c5"]


# -- ownership ---------------------------------------------------------------------------------------


async def test_an_object_rendered_by_two_syncs_fails_both_and_neither_takes_it_over(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    spoke = spokes[0]
    repo = WorkRepo(tmp_path / "repo")
    repo.write(
        {
            "one/x.yaml": configmap("x", namespace, {"from": "one"}),
            "two/y.yaml": configmap("y", namespace, {}),
        }
    )
    first = repo.commit("x in one, y in two")
    syncs = [{"name": "one", "path": "one"}, {"name": "two", "path": "two"}]
    config = write_fleet(tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig}, syncs=syncs)
    async with running(config) as daemon:
        await until(daemon, spoke.name, "two", "ready", first)
        repo.write({"two/x.yaml": configmap("x", namespace, {"from": "two"})})
        clash = repo.commit("two renders x too")
        daemon.trigger_fetch()
        for sync, other in (("one", "two"), ("two", "one")):
            error = await until(daemon, spoke.name, sync, "failed", clash)
            assert f"ConfigMap {namespace}/x also by sync {other}" in error
        live = await get(spoke, cm(namespace, "x"))
        assert live is not None
        assert live["data"] == {"from": "one"}
        assert live["metadata"]["labels"]["fleetd.dev/sync"] == "one"


async def test_git_cannot_write_into_the_reserved_namespace(spokes: list[Spoke], tmp_path: Path) -> None:
    spoke = spokes[1]
    repo = WorkRepo(tmp_path / "repo")
    repo.write({"apps/evil.yaml": configmap("fleet.apps", SYSTEM_NAMESPACE, {"entries": ""})})
    first = repo.commit("overwrite a ledger")
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={spoke.name: spoke.kubeconfig},
        syncs=[{"name": "apps", "path": "apps"}],
    )
    async with running(config) as daemon:
        error = await until(daemon, spoke.name, "apps", "failed", first)
        assert "reserved" in error
        assert "apps/evil.yaml" in error


# -- crashes and restarts ----------------------------------------------------------------------------


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetd", "run", "--config", str(config)],
        stderr=open(log, "ab"),
    )


async def test_objects_created_before_a_kill_9_mid_apply_are_pruned_after_a_restart(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    spoke = spokes[2]
    many = [f"m{i:03d}" for i in range(300)]
    repo = WorkRepo(tmp_path / "repo")
    repo.write({"apps/keep.yaml": configmap("keep", namespace, {})})
    repo.write({f"apps/{n}.yaml": configmap(n, namespace, {"n": n}) for n in many})
    repo.commit("three hundred ConfigMaps")
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig},
        syncs=[{"name": "apps", "path": "apps", "max_prune": "100%"}],
    )  # fmt: skip
    daemon = _start(config, tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 90
        while not await present(spoke, namespace, *many[:40]) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        created = await present(spoke, namespace, *many)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert len(created) > 0, "the kill came before anything was created"
        ledger = await get(spoke, cm(SYSTEM_NAMESPACE, f"{_fleet_name(config)}.apps"))
        assert ledger is not None, "the ledger was written before the first object"
        for name in many:
            repo.remove(f"apps/{name}.yaml")
        repo.commit("they were a mistake")
        daemon = _start(config, tmp_path / "daemon.log")

        async def all_pruned() -> bool:
            return await present(spoke, namespace, *many) == [] and await present(
                spoke, namespace, "keep"
            ) == ["keep"]

        await eventually(
            all_pruned, "every object created before the kill pruned after the restart", timeout=120
        )
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(20)


def _fleet_name(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("name = "):
            return str(json.loads(line.split("=", 1)[1]))
    raise AssertionError("no fleet name")


async def test_a_hand_edit_right_after_a_restart_is_corrected_within_seconds(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    spoke = spokes[0]
    repo = WorkRepo(tmp_path / "repo")
    repo.write({"apps/a.yaml": configmap("a", namespace, {"v": "git"})})
    first = repo.commit("a")
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={spoke.name: spoke.kubeconfig},
        syncs=[{"name": "apps", "path": "apps"}],
    )
    async with running(config) as daemon:
        await until(daemon, spoke.name, "apps", "ready", first)
    live = await get(spoke, cm(namespace, "a"))
    assert live is not None
    live["data"] = {"v": "edited while fleetd was down"}
    await put(spoke, "PUT", cm(namespace, "a"), live)
    async with running(config) as daemon:
        started = time.monotonic()
        live = await get(spoke, cm(namespace, "a"))
        assert live is not None
        live["data"] = {"v": "edited right after the restart"}
        await put(spoke, "PUT", cm(namespace, "a"), live)

        async def corrected() -> bool:
            obj = await get(spoke, cm(namespace, "a"))
            return obj is not None and obj["data"] == {"v": "git"}

        await eventually(corrected, "the edit corrected", timeout=5)
        assert time.monotonic() - started < 5
        assert await status_is(daemon, spoke.name, "apps", "ready", first)

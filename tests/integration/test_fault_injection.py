"""An unexpected exception at any stage of one cluster's work stays in that cluster.

For each stage — render, plan, apply, prune, ledger, health, drift, watch —
the stage's own code is wrapped so that it raises a plain ``RuntimeError``
(a stand-in for any bug or unforeseen input) for one cluster only. The
other clusters converge to the new revision, the daemon keeps serving
``/healthz``, the victim says what failed, and once the fault is gone the
victim converges too. The wrappers replace fleetd's own stage functions,
never the Kubernetes client, git or a subprocess: every request still goes
to the real API servers.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fleetd.reconcile import reconciler as reconciler_module
from fleetd.reconcile.apply import Applier
from fleetd.reconcile.drift import DriftTracker
from fleetd.reconcile.ledger import LedgerStore
from fleetd.reconcile.plan import Planner
from fleetd.reconcile.reconciler import ClusterReconciler
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, put, running, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(180)]

INJECTED = "injected fault"


def faulty(stage: str, victim: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, raising a plain RuntimeError when it runs for ``victim``."""

    def check(args: tuple[Any, ...]) -> None:
        if CLUSTER_OF[stage](args[0]) == victim:
            raise RuntimeError(f"{INJECTED} in {stage}")

    if not inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        def plain(*args: Any, **kwargs: Any) -> Any:
            check(args)
            return original(*args, **kwargs)

        return plain

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        check(args)
        return await original(*args, **kwargs)

    return wrapper


#: stage -> (the owner of the function that runs it, its name); see CLUSTER_OF for the cluster
STAGES: dict[str, tuple[Any, str]] = {
    "render": (ClusterReconciler, "desired"),
    "plan": (Planner, "change_set"),
    "apply": (Applier, "_execute"),
    "prune": (reconciler_module, "prune"),
    "ledger": (LedgerStore, "write"),
    "health": (reconciler_module, "wait_healthy"),
    "drift": (DriftTracker, "_confirm"),
    "watch": (DriftTracker, "_observe"),
}
CLUSTER_OF: dict[str, Callable[[Any], str]] = {
    "render": lambda reconciler: reconciler.cluster.name,
    "plan": lambda planner: planner.client.cluster,
    "apply": lambda applier: applier.planner.client.cluster,
    "prune": lambda client: client.cluster,
    "ledger": lambda store: store._client.cluster,
    "health": lambda client: client.cluster,
    "drift": lambda tracker: tracker._client.cluster,
    "watch": lambda tracker: tracker._client.cluster,
}


@pytest.mark.parametrize("stage", list(STAGES))
async def test_an_unexpected_exception_in_one_clusters_stage_leaves_the_others_converging(
    spokes: list[Spoke], tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    repo = WorkRepo(tmp_path / "repo")
    repo.write(
        {"apps/a.yaml": configmap("a", namespace, {"v": "1"}), "apps/b.yaml": configmap("b", namespace, {})}
    )
    first = repo.commit("two ConfigMaps")
    syncs = [{"name": "apps", "path": "apps", "wait": True}]
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={s.name: s.kubeconfig for s in spokes}, syncs=syncs
    )
    victim, healthy = spokes[0], spokes[1:]
    async with running(config) as daemon:
        await eventually(lambda: _all_ready(daemon, spokes, first), "first revision everywhere")
        owner, name = STAGES[stage]
        if stage in ("drift", "watch"):  # faults met only by a running watch or a drift correction
            latest = await _commit_and_converge(daemon, repo, namespace, spokes, "2")
            monkeypatch.setattr(owner, name, faulty(stage, victim.name, getattr(owner, name)))
            await _hand_edit(victim, namespace)
            await eventually(lambda: _shows_fault(daemon, victim.name, stage), f"the victim reports {stage}")
            latest = await _commit_and_converge(daemon, repo, namespace, healthy, "3")
        else:
            monkeypatch.setattr(owner, name, faulty(stage, victim.name, getattr(owner, name)))
            latest = await _commit_and_converge(daemon, repo, namespace, healthy, "2")
            await eventually(lambda: _shows_fault(daemon, victim.name, stage), f"the victim reports {stage}")
        assert await _healthz(daemon) == 200
        monkeypatch.undo()
        daemon.trigger(victim.name)
        await eventually(
            lambda: _all_ready(daemon, [victim], latest), "the victim converges once the fault is gone"
        )


async def _commit_and_converge(
    daemon: Any, repo: WorkRepo, namespace: str, spokes: list[Spoke], version: str
) -> str:
    """Change ``a`` (and drop ``b``), fetch, and wait until ``spokes`` are ready at the new revision."""
    if (repo.path / "apps/b.yaml").exists():
        repo.remove("apps/b.yaml")
    repo.write({"apps/a.yaml": configmap("a", namespace, {"v": version})})
    revision = repo.commit(f"a at v{version}, no b")
    daemon.trigger_fetch()
    await eventually(
        lambda: _all_ready(daemon, spokes, revision), f"{[s.name for s in spokes]} at v{version}"
    )
    for spoke in spokes:
        assert await get(spoke, f"/api/v1/namespaces/{namespace}/configmaps/b") is None
    return revision


async def _all_ready(daemon: Any, spokes: list[Spoke], revision: str) -> bool:
    statuses = [daemon.state.status(s.name, "apps") for s in spokes]
    return all(st is not None and st.result == "ready" and st.revision == revision for st in statuses)


async def _shows_fault(daemon: Any, cluster: str, stage: str) -> bool:
    status = daemon.state.status(cluster, "apps")
    where = [status.error if status else None, daemon.state.cluster(cluster).last_error]
    return any(text and f"{INJECTED} in {stage}" in text for text in where)


async def _hand_edit(spoke: Spoke, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/a"
    obj = await get(spoke, path)
    assert obj is not None
    obj["data"] = {"v": "by hand"}
    await put(spoke, "PUT", path, obj)


async def _healthz(daemon: Any) -> int:
    url = f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}/healthz"
    await daemon.http_ready.wait()
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status

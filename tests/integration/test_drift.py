"""Drift in seconds: manual changes to managed objects are noticed by watching, then corrected or reported."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
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
DRIFT_DEADLINE = 10.0  # seconds; the design goal is about one


def kubectl(spoke: Spoke, *args: str) -> None:
    argv = [str(toolset().path("kubectl")), "--kubeconfig", str(spoke.kubeconfig), *args]
    subprocess.run(argv, check=True, capture_output=True, env=dict(os.environ), timeout=30)


async def kube(spoke: Spoke, *args: str) -> None:
    await asyncio.to_thread(kubectl, spoke, *args)


@dataclass(frozen=True)
class Drift:
    """What the fleet state records about one cluster's drift (counters by sync and kind)."""

    daemon: Daemon
    cluster: str

    def _of(self, counts: Counter[tuple[str, str, str]]) -> Counter[tuple[str, str]]:
        return Counter({(s, k): n for (c, s, k), n in counts.items() if c == self.cluster})

    @property
    def corrections(self) -> Counter[tuple[str, str]]:
        return self._of(self.daemon.state.corrections)

    @property
    def events(self) -> Counter[tuple[str, str]]:
        return self._of(self.daemon.state.drift_events)

    def drifted_count(self, sync: str) -> int:
        return self.daemon.state.drifted_count(self.cluster, sync)

    def vouches_for(self, sync: str) -> bool:
        tracker = self.daemon.workers[self.cluster].drift
        return tracker is not None and tracker.vouches_for(sync)


def tracker(daemon: Daemon, spoke: Spoke) -> Drift:
    assert daemon.workers[spoke.name].drift is not None
    return Drift(daemon, spoke.name)


def hpa(name: str, ns: str, target: str) -> str:
    return json.dumps(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "minReplicas": 1,
                "maxReplicas": 10,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        }
    )


async def start(
    tmp_path: Path, spoke: Spoke, drift: str, extra: dict[str, Any] | None = None
) -> tuple[Path, str, str]:
    ns = unique("drift")
    repo = WorkRepo(tmp_path / "repo").write(
        {
            "apps/ns.yaml": namespace_doc(ns),
            "apps/web.yaml": deployment("web", ns, replicas=2),
            "apps/cm.yaml": configmap("cm", ns, {"colour": "blue", "free": "x"}, labels={"tier": "web"}),
            "apps/scaled.yaml": deployment("scaled", ns, replicas=2),
            "apps/hpa.yaml": hpa("scaled", ns, "scaled"),
        }
    )
    rev = repo.commit("drift")
    sync = {"name": "apps", "path": "apps", "drift": drift, **(extra or {})}
    config = write_fleet(tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig}, syncs=[sync])
    return config, ns, rev


async def ready(daemon: Daemon, spoke: Spoke, rev: str) -> None:
    async def check() -> bool:
        s = daemon.state.status(spoke.name, "apps")
        drift = daemon.workers[spoke.name].drift
        return (
            s is not None
            and s.result == "ready"
            and s.revision == rev
            and drift is not None
            and drift.vouches_for("apps")
        )

    await eventually(check, "sync ready and watched")


def cm(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps/cm"


def web(ns: str, name: str = "web") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"


async def test_edit_scale_label_and_delete_are_corrected_within_seconds(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    spoke = spokes[0]
    config, ns, rev = await start(tmp_path, spoke, "correct")
    async with running(config) as daemon:
        await ready(daemon, spoke, rev)
        drift = tracker(daemon, spoke)
        changes = [
            (
                ("-n", ns, "patch", "configmap/cm", "-p", '{"data":{"colour":"red"}}'),
                cm(ns),
                lambda o: o["data"]["colour"] == "blue",
            ),
            (
                ("-n", ns, "scale", "deployment/web", "--replicas=5"),
                web(ns),
                lambda o: o["spec"]["replicas"] == 2,
            ),
            (
                ("-n", ns, "label", "configmap/cm", "tier=db", "--overwrite"),
                cm(ns),
                lambda o: o["metadata"]["labels"]["tier"] == "web",
            ),
            (("-n", ns, "delete", "configmap/cm"), cm(ns), lambda o: o["data"]["colour"] == "blue"),
        ]
        for number, (args, path, restored) in enumerate(changes, 1):
            await kube(spoke, *args)

            async def corrected(path: str = path, restored: Any = restored) -> bool:
                obj = await get(spoke, path)
                return (
                    obj is not None
                    and obj["metadata"].get("deletionTimestamp") is None
                    and bool(restored(obj))
                )

            await eventually(corrected, f"correction of kubectl {' '.join(args[2:])}", timeout=DRIFT_DEADLINE)
            await eventually(partial(_at_least, drift, number), f"{number} corrections counted")
        assert drift.corrections[("apps", "ConfigMap")] == 3
        assert drift.corrections[("apps", "Deployment")] == 1
        assert drift.drifted_count("apps") == 0


async def _true(value: bool) -> bool:
    return value


async def _at_least(drift: Drift, count: int) -> bool:
    return sum(drift.corrections.values()) >= count


async def test_under_report_drift_is_counted_and_left_in_place(spokes: list[Spoke], tmp_path: Path) -> None:
    spoke = spokes[1]
    config, ns, rev = await start(tmp_path, spoke, "report")
    async with running(config) as daemon:
        await ready(daemon, spoke, rev)
        drift = tracker(daemon, spoke)
        await kube(spoke, "-n", ns, "patch", "configmap/cm", "-p", '{"data":{"colour":"red"}}')
        await kube(spoke, "-n", ns, "scale", "deployment/web", "--replicas=4")
        await eventually(lambda: _true(drift.drifted_count("apps") == 2), "two drifted objects reported")
        assert sum(drift.corrections.values()) == 0
        assert drift.events[("apps", "ConfigMap")] == 1
        assert drift.events[("apps", "Deployment")] == 1
        await asyncio.sleep(1.0)  # give a wrong correction the chance to happen
        assert ((await get(spoke, cm(ns))) or {})["data"]["colour"] == "red"
        assert ((await get(spoke, web(ns))) or {})["spec"]["replicas"] == 4
        assert not drift.vouches_for("apps")


async def test_hpa_owned_replicas_and_ignored_paths_are_not_drift(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    spoke = spokes[2]
    ignore = {"ignore": [{"kind": "ConfigMap", "paths": ["/data/free"]}]}
    config, ns, rev = await start(tmp_path, spoke, "correct", ignore)
    async with running(config) as daemon:
        await ready(daemon, spoke, rev)
        drift = tracker(daemon, spoke)
        # What the HPA controller does: write the scale subresource under its own manager.
        scale = {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "scaled", "namespace": ns},
            "spec": {"replicas": 7},
        }
        await put(spoke, "PUT", web(ns, "scaled") + "/scale?fieldManager=horizontal-pod-autoscaler", scale)
        await kube(
            spoke,
            "-n",
            ns,
            "patch",
            "configmap/cm",
            "--field-manager=operator",
            "-p",
            '{"data":{"free":"changed"}}',
        )
        await asyncio.sleep(2.0)  # a drift check would have run by now
        assert sum(drift.events.values()) == 0
        daemon.trigger(spoke.name)  # a full reconcile keeps the HPA's replicas and the ignored field too
        await eventually(
            lambda: _true(daemon.state.statuses[(spoke.name, "apps")].attempted_at > 0), "reconcile"
        )
        await asyncio.sleep(1.0)
        assert ((await get(spoke, web(ns, "scaled"))) or {})["spec"]["replicas"] == 7
        assert ((await get(spoke, cm(ns))) or {})["data"]["free"] == "changed"
        await kube(
            spoke,
            "-n",
            ns,
            "patch",
            "configmap/cm",
            "--field-manager=operator",
            "-p",
            '{"data":{"colour":"red"}}',
        )
        await eventually(
            lambda: _true(drift.corrections[("apps", "ConfigMap")] == 1),
            "a field that is not ignored is corrected",
        )


async def test_a_converged_watched_sync_sends_no_requests_even_when_its_interval_passes(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    spoke = spokes[0]
    config, _, rev = await start(tmp_path, spoke, "correct", {"interval": "1s"})
    async with running(config) as daemon:
        await ready(daemon, spoke, rev)
        worker = daemon.workers[spoke.name]
        before = worker.request_totals()
        await asyncio.sleep(
            2.0
        )  # an absence is asserted over a window: a watch start must not re-check objects
        assert worker.request_totals() == before
        assert sum(tracker(daemon, spoke).events.values()) == 0


async def test_a_hand_edit_of_a_secret_written_as_string_data_in_git_is_corrected(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    spoke = spokes[2]
    repo = WorkRepo(tmp_path / "repo")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": namespace},
              "stringData": {"password": "from-git"}}  # fmt: skip
    repo.write({"apps/s.yaml": json.dumps(secret)})
    repo.commit("a Secret in stringData form")
    config = write_fleet(tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig},
                         syncs=[{"name": "apps", "path": "apps"}])  # fmt: skip
    path = f"/api/v1/namespaces/{namespace}/secrets/s"
    async with running(config) as daemon:
        await eventually(lambda: _true(Drift(daemon, spoke.name).vouches_for("apps")), "applied and watched")
        live = await get(spoke, path)
        assert live is not None
        live["data"] = {"password": base64.b64encode(b"by hand").decode()}
        await put(spoke, "PUT", path, live)

        async def restored() -> bool:
            obj = await get(spoke, path)
            return obj is not None and base64.b64decode(obj["data"]["password"]) == b"from-git"

        await eventually(restored, "the Secret's value restored", timeout=DRIFT_DEADLINE)
        assert Drift(daemon, spoke.name).corrections[("apps", "Secret")] == 1

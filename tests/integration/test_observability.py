"""The daemon seen from outside: drift in Prometheus metrics, the status API, webhooks that fetch."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
from testbed.build import toolset
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, namespace_doc, running, unique, write_fleet
from tests.prometheus import running_prometheus

pytestmark = pytest.mark.testbed


def base_url(daemon: Daemon) -> str:
    return f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}"


async def scrape(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(base_url(daemon) + "/metrics") as resp:
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def kubectl(spoke: Spoke, *args: str) -> None:
    argv = [str(toolset().path("kubectl")), "--kubeconfig", str(spoke.kubeconfig), *args]
    subprocess.run(argv, check=True, capture_output=True, env=dict(os.environ), timeout=30)


def fleet_with_configmap(
    tmp_path: Path, spoke: Spoke, drift: str, **fleet_extra: str
) -> tuple[Path, WorkRepo, str, str]:
    ns = unique("obs")
    repo = WorkRepo(tmp_path / "repo").write(
        {"apps/ns.yaml": namespace_doc(ns), "apps/cm.yaml": configmap("cm", ns, {"colour": "blue"})}
    )
    rev = repo.commit("observable")
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={spoke.name: spoke.kubeconfig},
        syncs=[{"name": "apps", "path": "apps", "drift": drift}],
    )
    if fleet_extra:
        config.write_text(config.read_text() + "".join(f"\n{k}\n" for k in fleet_extra.values()))
    return config, repo, ns, rev


async def until_watched(daemon: Daemon, spoke: Spoke, rev: str) -> None:
    async def check() -> bool:
        worker = daemon.workers[spoke.name]
        status = daemon.state.status(spoke.name, "apps")
        return bool(status and status.revision == rev and worker.drift and worker.drift.vouches_for("apps"))

    await eventually(check, "sync ready and watched")


async def test_corrected_drift_shows_in_metrics_and_the_status_api(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    spoke = spokes[0]
    config, _, ns, rev = fleet_with_configmap(tmp_path, spoke, "correct")
    async with running(config) as daemon:
        await until_watched(daemon, spoke, rev)
        await asyncio.to_thread(
            kubectl, spoke, "-n", ns, "patch", "configmap/cm", "-p", '{"data":{"colour":"red"}}'
        )
        labels = (("cluster", spoke.name), ("kind", "ConfigMap"), ("sync", "apps"))

        async def counted() -> bool:
            return (await scrape(daemon)).get(("fleetd_drift_corrections_total", labels)) == 1.0

        await eventually(counted, "fleetd_drift_corrections_total == 1")
        samples = await scrape(daemon)
        sync = (("cluster", spoke.name), ("sync", "apps"))
        assert samples[("fleetd_drift_events_total", labels)] == 1.0
        assert samples[("fleetd_drifted_objects", sync)] == 0.0
        assert samples[("fleetd_sync_ready", sync)] == 1.0
        assert samples[("fleetd_managed_objects", sync)] == 2.0
        assert samples[("fleetd_cluster_reachable", (("cluster", spoke.name),))] == 1.0
        assert samples[("fleetd_api_requests_total", (("cluster", spoke.name), ("method", "PATCH")))] > 0
        assert ((await get(spoke, f"/api/v1/namespaces/{ns}/configmaps/cm")) or {})["data"] == {
            "colour": "blue"
        }
        async with aiohttp.ClientSession() as http, http.get(base_url(daemon) + "/api/v1/status") as resp:
            doc = await resp.json()
        (cluster,) = doc["clusters"]
        assert cluster["reachable"] is True
        assert cluster["syncs"][0] | {"attempted_at": 0, "succeeded_at": 0} == {
            "name": "apps", "revision": rev, "result": "ready", "objects": 2, "drifted": 0, "error": None,
            "changed": 2, "pruned": 0, "attempted_at": 0, "succeeded_at": 0, "written": [], "warnings": [],
            "drifted_objects": [], "suspended": False,
        }  # fmt: skip


async def test_prometheus_scrapes_a_reported_drift(spokes: list[Spoke], tmp_path: Path) -> None:
    spoke = spokes[1]
    config, _, ns, rev = fleet_with_configmap(tmp_path, spoke, "report")
    async with running(config) as daemon:
        await until_watched(daemon, spoke, rev)
        await asyncio.to_thread(
            kubectl, spoke, "-n", ns, "patch", "configmap/cm", "-p", '{"data":{"colour":"red"}}'
        )
        target = f"{daemon.fleet.listen_host}:{daemon.fleet.listen_port}"
        async with running_prometheus(tmp_path / "prometheus", [target]) as prom:
            query = f'fleetd_drifted_objects{{cluster="{spoke.name}",sync="apps"}} == 1'
            result = await prom.wait_for(query)
            assert result[0]["metric"]["cluster"] == spoke.name
            events = await prom.wait_for(
                f'fleetd_drift_events_total{{cluster="{spoke.name}",kind="ConfigMap"}} == 1'
            )
            assert events


def signed(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def test_a_signed_github_push_triggers_a_fetch_and_reconcile_and_a_bad_one_is_refused(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    spoke = spokes[2]
    secret_file = tmp_path / "github-secret"
    secret_file.write_text("s3cret-for-tests\n")
    secret_file.chmod(0o600)
    hooks = f'[webhooks]\ngithub_secret_file = "{secret_file}"'
    config, repo, ns, rev = fleet_with_configmap(tmp_path, spoke, "correct", webhooks=hooks)
    async with running(config) as daemon:
        await until_watched(daemon, spoke, rev)
        repo.write({"apps/cm.yaml": configmap("cm", ns, {"colour": "green"})})
        repo.commit("green")  # the source interval is an hour: only the webhook can bring this in soon
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        url = base_url(daemon) + "/hooks/github"
        async with aiohttp.ClientSession() as http:
            bad = {"X-GitHub-Event": "push", "X-Hub-Signature-256": signed(b"wrong", body)}
            async with http.post(url, data=body, headers=bad) as resp:
                assert resp.status == 401
            good = {"X-GitHub-Event": "push", "X-Hub-Signature-256": signed(b"s3cret-for-tests", body)}
            async with http.post(url, data=body, headers=good) as resp:
                assert resp.status == 202

        async def green() -> bool:
            obj = await get(spoke, f"/api/v1/namespaces/{ns}/configmaps/cm")
            return obj is not None and obj["data"] == {"colour": "green"}

        await eventually(green, "the pushed revision applied")
        samples = await scrape(daemon)
        assert (
            samples[("fleetd_webhook_requests_total", (("receiver", "github"), ("result", "unauthorized")))]
            == 1.0
        )
        assert (
            samples[("fleetd_webhook_requests_total", (("receiver", "github"), ("result", "accepted")))]
            == 1.0
        )

"""An exec credential plugin that hangs costs its cluster one visible error, and never outlives fleetd.

A daemon reconciles two plain spokes and a third whose kubeconfig gets its
client certificate from an exec plugin. The plugin hangs (and starts a
helper that would hang too): within the cluster's ``credential_timeout``
both are killed, and the cluster is a failed status, an unreachable
cluster, an event and a metric naming the plugin — while the other spokes
converge. Once the plugin answers, the cluster converges through it. A
plugin still running when the daemon stops is killed with it. A token a
plugin gives is renewed by running it again before it expires.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from fleetd.daemon.events import EventKind
from fleetd.daemon.root import SHUTDOWN_TIMEOUT, Daemon
from fleetd.kube.client import connect
from fleetd.kube.credentials import REFRESH_MARGIN
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, put, running, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(180)]

PLUGIN = """#!/bin/sh
echo $$ >> {dir}/pids
if [ -f {dir}/answer.json ]; then cat {dir}/answer.json; exit 0; fi
sleep 600 &
echo $! >> {dir}/pids
wait
"""


def plugin_kubeconfig(spoke: Spoke, directory: Path) -> Path:
    """The spoke's kubeconfig with its client certificate taken out: a plugin in ``directory`` gives it."""
    doc = yaml.safe_load(spoke.kubeconfig.read_text())
    user = doc["users"][0]["user"]
    answer = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {
        "clientCertificateData": _pem(user.pop("client-certificate-data")),
        "clientKeyData": _pem(user.pop("client-key-data")),
    }}  # fmt: skip
    (directory / "answer.json.ready").write_text(json.dumps(answer))
    script = directory / "get-credential"
    script.write_text(PLUGIN.format(dir=directory))
    script.chmod(0o755)
    user["exec"] = {"apiVersion": "client.authentication.k8s.io/v1", "command": "./get-credential"}
    path = directory / "plugin.kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def _pem(data: str) -> str:
    return base64.standard_b64decode(data).decode()


def inventory(tmp_path: Path, spokes: list[Spoke], namespace: str, timeout: str) -> tuple[Path, WorkRepo]:
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"v": "1"})})
    repo.commit("v1")
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    clusters = {spokes[0].name: spokes[0].kubeconfig, spokes[1].name: spokes[1].kubeconfig,
                "plugin": plugin_kubeconfig(spokes[2], plugin_dir)}  # fmt: skip
    config = write_fleet(
        tmp_path, repo=repo.path, clusters=clusters, syncs=[{"name": "apps", "path": "apps"}]
    )
    cluster_file = config.parent / "plugin.toml"
    text = cluster_file.read_text().replace("[cluster]\n", f'[cluster]\ncredential_timeout = "{timeout}"\n')
    cluster_file.write_text(text)
    return config, repo


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def plugin_pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "plugin" / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def ready_at(daemon: Daemon, cluster: str, revision: str) -> bool:
    status = daemon.state.status(cluster, "apps")
    return status is not None and status.result == "ready" and status.revision == revision


async def test_a_hanging_credential_plugin_times_out_into_a_visible_cluster_error_and_is_killed(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    config, repo = inventory(tmp_path, spokes, namespace, timeout="1s")
    async with running(config) as daemon:

        async def healthy_converged() -> bool:
            return all(ready_at(daemon, s.name, repo.head()) for s in spokes[:2])

        async def plugin_failed() -> bool:
            status = daemon.state.status("plugin", "apps")
            return (
                status is not None and status.result == "failed" and "did not answer" in (status.error or "")
            )

        await eventually(healthy_converged, "the plain spokes converged")
        await eventually(plugin_failed, "the plugin's cluster failed")
        error = daemon.state.status("plugin", "apps").error or ""  # type: ignore[union-attr]
        assert "get-credential did not answer within 1s; it was stopped" in error
        assert daemon.state.cluster("plugin").reachable is False
        assert daemon.state.cluster("plugin").errors["credentials"] >= 1
        assert daemon.state.events(cluster="plugin", kinds=(str(EventKind.CLUSTER_UNREACHABLE),))
        assert daemon.state.events(cluster="plugin", kinds=(str(EventKind.RECONCILE_FAILED),))
        base = f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}"
        await daemon.http_ready.wait()
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/metrics") as resp:
                assert 'fleetd_api_errors_total{cluster="plugin",kind="credentials"}' in await resp.text()
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200
        pids = plugin_pids(tmp_path)
        assert len(pids) >= 2  # the plugin and its helper, at least once

        async def killed() -> bool:
            return not any(alive(pid) for pid in plugin_pids(tmp_path)[:2])

        await eventually(killed, "the timed-out plugin and its helper killed", timeout=10)
        (tmp_path / "plugin" / "answer.json.ready").rename(tmp_path / "plugin" / "answer.json")
        daemon.trigger("plugin")

        async def through_the_plugin() -> bool:
            return ready_at(daemon, "plugin", repo.head())

        await eventually(through_the_plugin, "the cluster converged once the plugin answers", timeout=60)
        assert daemon.state.cluster("plugin").reachable is True


async def test_a_credential_plugin_still_running_when_the_daemon_stops_is_killed(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    config, _ = inventory(tmp_path, spokes, namespace, timeout="10m")
    async with running(config) as daemon:

        async def hanging() -> bool:
            return len(plugin_pids(tmp_path)) >= 2

        await eventually(hanging, "the plugin running, with its helper")
        pids = plugin_pids(tmp_path)
        assert all(alive(pid) for pid in pids)
        stopped_at = time.monotonic()
    assert time.monotonic() - stopped_at < SHUTDOWN_TIMEOUT
    assert (
        daemon.state.status("plugin", "apps") is None or daemon.state.cluster("plugin").reachable is not True
    )
    assert not any(alive(pid) for pid in pids), "the plugin outlived the daemon"


async def test_a_plugins_token_is_renewed_by_running_it_again_before_it_expires(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    spoke = spokes[0]
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "plugin-user"}}
    await put(spoke, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", sa)
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600},
    }
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/plugin-user/token"
    token = (await put(spoke, "POST", path, request))["status"]["token"]
    doc = yaml.safe_load(spoke.kubeconfig.read_text())
    script = tmp_path / "token-plugin"
    script.write_text(TOKEN_PLUGIN.format(dir=tmp_path, token=token, seconds=REFRESH_MARGIN + 2))
    script.chmod(0o755)
    doc["users"][0]["user"] = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}
    }
    kubeconfig = tmp_path / "token.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(doc))
    client = await connect("token", kubeconfig)
    try:
        runs = tmp_path / "runs"
        assert (await client.version())["gitVersion"]
        assert runs.read_text().split() == ["run"]

        async def renewed() -> bool:
            await client.version()  # a request after the expiry draws near runs the plugin again
            return len(runs.read_text().split()) == 2

        await eventually(renewed, "the plugin run again for a fresh token", timeout=20)
        assert (await client.version())["gitVersion"]
    finally:
        await client.close()


TOKEN_PLUGIN = """#!/bin/sh
echo run >> {dir}/runs
expiry=$(date -u -d "+{seconds:.0f} seconds" +%Y-%m-%dT%H:%M:%SZ)
printf '{{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
  "status": {{"token": "{token}", "expirationTimestamp": "%s"}}}}' "$expiry"
"""

"""Operating fleetd: CLI commands through the control socket, JSON logs, live inventory reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, namespace_doc, running, unique, write_fleet

pytestmark = pytest.mark.testbed


def fleetd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def statuses(config: Path) -> dict[str, dict[str, object]]:
    rows = json.loads(fleetd("status", "--config", str(config), "--json").stdout)
    return {f"{r['cluster']}/{r['sync']}": r for r in rows}


def wait_for(config: Path, key: str, result: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    row: dict[str, object] = {}
    while time.monotonic() < deadline:
        row = statuses(config).get(key, {})
        if row.get("result") == result:
            return row
        time.sleep(0.3)
    raise AssertionError(f"{key} never became {result}: {row}")


def test_cli_commands_act_on_the_running_daemon_and_logs_are_json_lines(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    ns = unique("ops")
    repo = WorkRepo(tmp_path / "repo").write(
        {"k/ns.yaml": namespace_doc(ns), "k/cm.yaml": configmap("cm", ns, {"a": "1"})}
    )
    repo.commit("ops")
    spoke = spokes[0]
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig}, syncs=[{"name": "k", "path": "k"}]
    )
    cfg = str(config)
    not_running = fleetd("reconcile", spoke.name, "--config", cfg)
    assert not_running.returncode == 2
    assert "not running" in not_running.stderr
    log_path = tmp_path / "daemon.log"
    env = {**os.environ, "FLEETD_LOG_FORMAT": "json"}
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "fleetd", "run", "--config", cfg], stderr=log, env=env
        )
        try:
            first = wait_for(config, f"{spoke.name}/k", "ready")
            done = fleetd("reconcile", spoke.name, "k", "--config", cfg)
            assert done.returncode == 0, done.stderr
            assert "reconcile of" in done.stdout
            deadline = time.monotonic() + 30
            while statuses(config)[f"{spoke.name}/k"]["attempted_at"] == first["attempted_at"]:
                assert time.monotonic() < deadline, "the requested reconcile never ran"
                time.sleep(0.2)
            unknown = fleetd("reconcile", "no-such-cluster", "--config", cfg)
            assert unknown.returncode == 2
            assert f"known: {spoke.name}" in unknown.stderr
            assert fleetd("suspend", spoke.name, "k", "--config", cfg).returncode == 0
            wait_for(config, f"{spoke.name}/k", "suspended")
            assert fleetd("resume", spoke.name, "k", "--config", cfg).returncode == 0
            wait_for(config, f"{spoke.name}/k", "ready")
            for verb in ("hold", "promote", "resume"):
                assert fleetd("rollout", verb, "--config", cfg).returncode == 0
            assert fleetd("reload", "--config", cfg).returncode == 0
            same = fleetd("diff", spoke.name, "--config", cfg)
            assert same.returncode == 0, same.stderr
            assert "0 to create, 0 to change, 0 to prune" in same.stdout
            repo.write({"k/cm.yaml": configmap("cm", ns, {"a": "2"})})
            repo.commit("a change the daemon has not fetched yet (its interval is an hour)")
            changed = fleetd("diff", spoke.name, "k", "--config", cfg)
            assert changed.returncode == 1, changed.stderr
            assert f"ConfigMap {ns}/cm" in changed.stdout
            assert fleetd("diff", "no-such-cluster", "--config", cfg).returncode == 2
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(20) == 0
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(r.get("cluster") == spoke.name and r.get("sync") == "k" for r in records)
    assert {"time", "level", "logger", "message"} <= set(records[0])


async def test_valid_and_invalid_inventory_edits_added_and_removed_clusters_are_reloaded_live(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    ns = unique("reload")
    repo = WorkRepo(tmp_path / "repo").write(
        {"k/ns.yaml": namespace_doc(ns), "k/cm.yaml": configmap("cm", ns, {"who": "${who:=nobody}"})}
    )
    repo.commit("reload")
    first, second = spokes[0], spokes[1]
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={first.name: first.kubeconfig}, syncs=[{"name": "k", "path": "k"}]
    )
    cluster_file = config.parent / f"{first.name}.toml"

    async def value(spoke: Spoke) -> str | None:
        cm = await get(spoke, f"/api/v1/namespaces/{ns}/configmaps/cm")
        return None if cm is None else str(cm["data"]["who"])

    async with running(config) as daemon:
        await eventually(lambda: _is(value(first), "nobody"), "first apply")
        # A valid edit: a new variable is picked up without a restart.
        cluster_file.write_text(
            cluster_file.read_text().replace('cluster_name = "', 'who = "alice"\ncluster_name = "')
        )
        await eventually(lambda: _is(value(first), "alice"), "the edited variable applied")
        # An invalid edit: reported, the last good inventory keeps running.
        good = cluster_file.read_text()
        daemon.reloader.reloaded.clear()
        cluster_file.write_text(good + "\nwave = 'first'\n")
        await eventually(lambda: _true(daemon.reloader.reloaded.is_set()), "the broken edit noticed")
        assert daemon.reload_error is not None
        assert f"{first.name}.toml" in daemon.reload_error
        assert first.name in daemon.workers
        cluster_file.write_text(good)
        await eventually(lambda: _true(daemon.reload_error is None), "the fix reloaded")
        # A cluster added: it starts and converges.
        (config.parent / f"{second.name}.toml").write_text(
            f'[cluster]\nkubeconfig = "{second.kubeconfig}"\n\n[[syncs]]\nname = "k"\npath = "k"\n'
        )
        await eventually(lambda: _is(value(second), "nobody"), "the added cluster reconciled")
        # A cluster removed: its worker stops and its objects are left alone.
        (config.parent / f"{second.name}.toml").unlink()
        await eventually(lambda: _true(second.name not in daemon.workers), "the removed cluster stopped")
        assert await value(second) == "nobody"


async def _is(value: Awaitable[str | None], expected: str) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value


async def test_a_removed_cluster_is_pruned_after_its_grace_period_and_a_returning_file_cancels_it(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    ns = unique("leaving")
    repo = WorkRepo(tmp_path / "repo").write(
        {"k/ns.yaml": namespace_doc(ns), "k/cm.yaml": configmap("cm", ns, {"a": "1"})}
    )
    repo.commit("leaving")
    staying, leaving = spokes[0], spokes[2]
    clusters = {s.name: s.kubeconfig for s in (staying, leaving)}
    config = write_fleet(tmp_path, repo=repo.path, clusters=clusters, syncs=[{"name": "k", "path": "k"}])
    grace = 2.0
    settings = f'[fleet]\nprune_removed_clusters = true\nprune_grace = "{grace:g}s"\n'
    config.write_text(config.read_text().replace("[fleet]\n", settings, 1))
    cluster_file = config.parent / f"{leaving.name}.toml"
    text = cluster_file.read_text()

    async def present(spoke: Spoke) -> bool:
        return await get(spoke, f"/api/v1/namespaces/{ns}/configmaps/cm") is not None

    async with running(config) as daemon:
        await eventually(lambda: present(leaving), "applied to the cluster that will leave")
        cluster_file.unlink()  # an editor saving by rename: gone for a moment, then back
        assert await daemon.reload()
        assert daemon.departures.pending == [leaving.name]
        cluster_file.write_text(text)
        assert await daemon.reload()
        assert daemon.departures.pending == []
        await asyncio.sleep(grace + 1)  # the grace period passes: nothing may happen
        assert await present(leaving)

        cluster_file.unlink()
        assert await daemon.reload()

        async def gone() -> bool:
            return leaving.name not in daemon.workers and not await present(leaving)

        await eventually(gone, "the departed cluster's objects pruned after the grace period")
        ledger = await get(leaving, f"/api/v1/namespaces/fleetd-system/configmaps/{daemon.fleet.name}.k")
        assert ledger is None
        assert await present(staying)

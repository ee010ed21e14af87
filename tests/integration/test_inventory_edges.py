"""Inventory edits that look harmless but are not: each is refused or reported, and the fleet goes on.

A cluster file that becomes a dangling or looping symlink must not read as
"this cluster left the fleet" (which would stop reconciling it, or prune it):
the reload is refused, the last good inventory stays in force, and the
cluster keeps converging. A fleet-wide sync whose selector matches nothing is
valid, but is logged and shown in the status API and ``fleetd status``.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd.daemon.events import EventKind
from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, running, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(120)]


def ready_at(daemon: Daemon, clusters: list[str], revision: str) -> bool:
    statuses = [daemon.state.status(c, "apps") for c in clusters]
    return all(s is not None and s.result == "ready" and s.revision == revision for s in statuses)


@pytest.mark.parametrize("breakage", ["dangling", "loop"])
async def test_a_cluster_file_that_becomes_a_broken_symlink_keeps_the_last_good_inventory(
    spokes: list[Spoke], tmp_path: Path, namespace: str, breakage: str
) -> None:
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"v": "1"})})
    repo.commit("v1")
    names = [spokes[0].name, spokes[1].name]
    clusters = {s.name: s.kubeconfig for s in spokes[:2]}
    config = write_fleet(
        tmp_path, repo=repo.path, clusters=clusters, syncs=[{"name": "apps", "path": "apps"}]
    )
    link = config.parent / f"{names[0]}.toml"
    kept = tmp_path / "kept" / link.name
    kept.parent.mkdir()
    link.rename(kept)
    link.symlink_to(kept)
    async with running(config) as daemon:
        await eventually(lambda: _true(ready_at(daemon, names, repo.head())), "both clusters at v1")
        link.unlink()
        if breakage == "dangling":
            link.symlink_to(tmp_path / "kept" / "moved-away.toml")
        else:
            link.symlink_to(link.name)
        assert not await daemon.reload()
        error = daemon.reload_error or ""
        assert str(link) in error
        assert ("does not exist" if breakage == "dangling" else "symlink loop") in error
        assert [c.name for c in daemon.fleet.clusters] == sorted(names)
        assert daemon.state.events(kinds=(str(EventKind.INVENTORY_REJECTED),))
        repo.write({"apps/cm.yaml": configmap("cm", namespace, {"v": "2"})})
        second = repo.commit("v2")
        daemon.trigger_fetch()
        await eventually(
            lambda: _true(ready_at(daemon, names, second)), "both clusters at v2, the symlinked too"
        )
        link.unlink()
        link.symlink_to(kept)
        assert await daemon.reload()
        assert daemon.reload_error is None


async def test_a_fleet_wide_sync_selecting_no_cluster_is_logged_and_shown_in_status(
    spokes: list[Spoke], tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fleetd.daemon.reload")
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"v": "1"})})
    repo.commit("v1")
    config = write_fleet(tmp_path, repo=repo.path, clusters={spokes[0].name: spokes[0].kubeconfig},
                         syncs=[{"name": "apps", "path": "apps"}])  # fmt: skip
    async with running(config) as daemon:
        assert daemon.status_document()["inventory"]["warnings"] == []
        with config.open("a") as out:
            out.write('\n[[syncs]]\nname = "gpu"\npath = "apps"\nselector = { gpu = "yes" }\n')
        assert await daemon.reload()
        warnings = daemon.status_document()["inventory"]["warnings"]
        assert len(warnings) == 1
        assert f"{config}:" in warnings[0]
        assert "syncs[0].selector: selects no cluster" in warnings[0]
        assert any("selects no cluster" in r.getMessage() for r in caplog.records)
    argv = [sys.executable, "-m", "fleetd", "status", "--config", str(config)]
    shown = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False
    )
    assert "warning: " in shown.stdout
    assert "selects no cluster" in shown.stdout


async def _true(value: bool) -> bool:
    return value

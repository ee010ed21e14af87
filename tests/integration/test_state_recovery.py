"""A damaged state database costs its contents, not the daemon: it is moved aside and rebuilt from the spokes.

The database is only the hub's memory: statuses, a copy of the ledgers, the
journal. The spokes keep the ledgers that matter. So a ``fleetd.db`` that is
garbage, truncated, or a directory is moved aside at start with a clear log
line; the daemon starts on a fresh one, and everything is rebuilt — by
reconciling, which reads each spoke's ledger, so even an object that left git
while the database was broken is pruned. ``fleetd status``, which must not
destroy anything, refuses the damaged file with exit 2 and a message.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd.daemon.root import Daemon
from fleetd.daemon.store import StateStore
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, running, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(120)]


def damage(db: Path, how: str) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if how == "garbage":
        db.write_bytes(os.urandom(64 * 1024))
    elif how == "truncated":
        db.write_bytes(db.read_bytes()[:1500])
    else:
        db.unlink()
        db.mkdir()
        (db / "something").write_text("not a database")


async def fleetd_status(config: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "fleetd", "status", "--config", str(config)]
    return await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False
    )


def ready_at(daemon: Daemon, spokes: list[Spoke], revision: str) -> bool:
    statuses = [daemon.state.status(s.name, "apps") for s in spokes]
    return all(s is not None and s.result == "ready" and s.revision == revision for s in statuses)


@pytest.mark.parametrize("how", ["garbage", "truncated", "directory"])
async def test_a_damaged_database_is_moved_aside_and_rebuilt_from_the_spokes_ledgers(
    spokes: list[Spoke], tmp_path: Path, namespace: str, how: str
) -> None:
    two = spokes[:2]
    repo = WorkRepo(tmp_path / "repo").write(
        {
            "apps/cm.yaml": configmap("cm", namespace, {"v": "1"}),
            "apps/gone.yaml": configmap("gone", namespace, {}),
        }
    )
    first = repo.commit("v1")
    config = write_fleet(tmp_path, repo=repo.path, clusters={s.name: s.kubeconfig for s in two},
                         syncs=[{"name": "apps", "path": "apps"}])  # fmt: skip
    async with running(config) as daemon:
        await eventually(lambda: _holds(ready_at(daemon, two, first)), "both spokes at v1")
        db = daemon.state.store.path
    repo.remove("apps/gone.yaml")
    second = repo.commit("gone leaves git while the database is broken")
    damage(db, how)

    refused = await fleetd_status(config)
    assert refused.returncode == 2
    assert f"fleetd status: cannot record state in {db}" in refused.stderr
    assert "Traceback" not in refused.stderr

    async with running(config) as daemon:
        await eventually(
            lambda: _holds(ready_at(daemon, two, second)), "both spokes at v2 on a fresh database"
        )
        for spoke in two:
            assert await get(spoke, f"/api/v1/namespaces/{namespace}/configmaps/gone") is None  # pruned
            assert await get(spoke, f"/api/v1/namespaces/{namespace}/configmaps/cm") is not None
        assert daemon.state.recording_error is None
    assert [p.name for p in db.parent.glob("fleetd.db.corrupt-*")], "the damaged file was not kept aside"
    assert len(StateStore(db.parent).statuses()) == 2
    assert (await fleetd_status(config)).returncode == 0


async def _holds(value: bool) -> bool:
    return value

"""``fleetd run`` as a process: reconciles, reports through ``fleetd status``, stops on SIGTERM in time."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetd.daemon.root import SHUTDOWN_TIMEOUT
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, namespace_doc, unique, write_fleet

pytestmark = pytest.mark.testbed


def _status(config: Path) -> tuple[int, list[dict[str, object]]]:
    result = subprocess.run(
        [sys.executable, "-m", "fleetd", "status", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout)


def test_fleetd_run_reconciles_reports_status_and_stops_on_sigterm_within_its_bound(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    ns = unique("cli")
    repo = WorkRepo(tmp_path / "repo").write(
        {"k/ns.yaml": namespace_doc(ns), "k/cm.yaml": configmap("cm", ns, {"a": "b"})}
    )
    revision = repo.commit("cli")
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={s.name: s.kubeconfig for s in spokes[:2]},
        syncs=[{"name": "k", "path": "k"}],
    )
    code, rows = _status(config)
    assert code == 1
    assert {r["result"] for r in rows} == {"pending"}
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen([sys.executable, "-m", "fleetd", "run", "--config", str(config)], stderr=log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, rows = _status(config)
            if code == 0:
                break
            time.sleep(0.5)
        assert code == 0, rows
        assert all(r["revision"] == revision and r["objects"] == 2 for r in rows)
        stopped_at = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(SHUTDOWN_TIMEOUT + 5) == 0
        assert time.monotonic() - stopped_at < SHUTDOWN_TIMEOUT
    finally:
        if daemon.poll() is None:
            daemon.kill()
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert "fleetd stopped" in text
    table = subprocess.run(
        [sys.executable, "-m", "fleetd", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert f"{spokes[0].name}  k     {revision[:12]}  ready" in table

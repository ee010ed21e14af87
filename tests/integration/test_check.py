"""``fleetd check`` against real spokes: healthy, unreachable, under-privileged, invalid inventory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd.testbed.bed import Spoke, TestBed

pytestmark = pytest.mark.testbed


def _inventory(tmp_path: Path, clusters: dict[str, Path]) -> Path:
    fleet = tmp_path / "fleetd.toml"
    fleet.write_text(
        f'[fleet]\nstate_dir = "{tmp_path / "state"}"\n\n[source]\nurl = "{tmp_path / "repo"}"\n'
    )
    for name, kubeconfig in clusters.items():
        (tmp_path / f"{name}.toml").write_text(f'[cluster]\nkubeconfig = "{kubeconfig}"\n')
    return fleet


def _check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "fleetd", "check", "--config", str(config), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_check_reports_every_healthy_spoke_with_its_version(spokes: list[Spoke], tmp_path: Path) -> None:
    config = _inventory(tmp_path, {s.name: s.kubeconfig for s in spokes})
    result = _check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    for spoke in spokes:
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(spoke.name))
        assert spoke.server in line
        assert "v1.36" in line
        assert line.rstrip().endswith("ok")


def test_check_json_describes_each_cluster(spokes: list[Spoke], tmp_path: Path) -> None:
    config = _inventory(tmp_path, {s.name: s.kubeconfig for s in spokes})
    result = _check(config, "--json")
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert doc["inventory"]["ok"] is True
    assert {c["name"] for c in doc["clusters"]} == {s.name for s in spokes}
    assert all(
        c["reachable"] and c["missing"] == [] and c["version"].startswith("v1.") for c in doc["clusters"]
    )


def test_a_stopped_spoke_is_reported_unreachable_and_the_others_are_still_checked(
    spokes: list[Spoke], spare_spoke: Spoke, testbed: TestBed, tmp_path: Path
) -> None:
    clusters = {s.name: s.kubeconfig for s in spokes} | {spare_spoke.name: spare_spoke.kubeconfig}
    config = _inventory(tmp_path, clusters)
    testbed.stop_spoke(spare_spoke.name)
    result = _check(config, "--json")
    assert result.returncode == 1
    by_name = {c["name"]: c for c in json.loads(result.stdout)["clusters"]}
    assert by_name[spare_spoke.name]["reachable"] is False
    assert "cannot connect" in by_name[spare_spoke.name]["error"]
    assert all(by_name[s.name]["ok"] for s in spokes)
    table = _check(config)
    assert f"{spare_spoke.name}: cannot connect to {spare_spoke.server}" in table.stdout


def test_a_non_admin_kubeconfig_lists_the_missing_permissions(spokes: list[Spoke], tmp_path: Path) -> None:
    viewer = spokes[0]
    config = _inventory(tmp_path, {"viewer": viewer.viewer_kubeconfig, spokes[1].name: spokes[1].kubeconfig})
    result = _check(config)
    assert result.returncode == 1
    missing = [ln for ln in result.stdout.splitlines() if ln.startswith("viewer: missing permission")]
    assert any("patch all resources (all API groups) cluster-wide" in ln for ln in missing)
    assert any("delete all resources" in ln for ln in missing)
    assert any("configmaps" in ln and "fleetd-system" in ln for ln in missing)
    assert f"{spokes[1].name}" in result.stdout


def test_a_missing_kubeconfig_is_named(spokes: list[Spoke], tmp_path: Path) -> None:
    config = _inventory(
        tmp_path, {"ghost": tmp_path / "nope.kubeconfig", spokes[0].name: spokes[0].kubeconfig}
    )
    result = _check(config)
    assert result.returncode == 1
    assert f"ghost: kubeconfig {tmp_path / 'nope.kubeconfig'} does not exist" in result.stdout


def test_an_invalid_inventory_exits_2_and_names_file_and_key(tmp_path: Path) -> None:
    config = _inventory(tmp_path, {"broken": tmp_path / "x.kubeconfig"})
    (tmp_path / "broken.toml").write_text('[cluster]\nkubeconfig = "x"\nwave = "first"\n')
    result = _check(config)
    assert result.returncode == 2
    assert "broken.toml" in result.stderr
    assert "wave" in result.stderr

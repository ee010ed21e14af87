"""The README's first command stays true: the demo fleet comes up and fleetd checks it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd.testbed.build import cache_root

pytestmark = pytest.mark.testbed
REPO = Path(__file__).resolve().parents[2]


def test_the_demo_brings_up_the_example_fleet_and_fleetd_checks_it_healthy(tmp_path: Path) -> None:
    # A private HOME keeps the demo's kubeconfigs and state away from the user's own demo.
    env = {**os.environ, "HOME": str(tmp_path), "FLEETD_TESTBED_CACHE": str(cache_root())}
    argv = [sys.executable, "-m", "fleetd.testbed", "demo", "--no-hold", "--config", "clusters/fleetd.toml"]
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mac-mini" in result.stdout
    assert "pi5" in result.stdout
    assert (tmp_path / ".kube" / "fleetd-demo").is_dir()

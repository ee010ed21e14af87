"""The README's first command stays true: the demo fleet comes up and fleetd reconciles it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.build import cache_root

pytestmark = pytest.mark.testbed
REPO = Path(__file__).resolve().parents[2]


def test_the_demo_reconciles_the_example_repository_onto_both_home_lab_spokes(tmp_path: Path) -> None:
    # A private HOME keeps the demo's kubeconfigs and state away from the user's own demo.
    env = {**os.environ, "HOME": str(tmp_path), "FLEETD_TESTBED_CACHE": str(cache_root())}
    argv = [sys.executable, "-m", "testbed", "demo", "--no-hold", "--config", "clusters/fleetd.toml"]
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    status = result.stdout[result.stdout.index("$ fleetd status") :]
    for cluster in ("mac-mini", "pi5"):
        for sync in ("infrastructure", "apps"):
            assert re.search(rf"^{cluster}\s+{sync}\s+[0-9a-f]{{12}}\s+ready\s+\d+", status, re.M), status
    assert (tmp_path / ".local" / "state" / "fleetd-demo" / "fleet-repo.git").is_dir()

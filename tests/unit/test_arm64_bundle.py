"""The Raspberry Pi 5 bundle's inputs agree with the project (arm64/).

Building and checking the bundle needs the network and emulation
(arm64/check.sh); these tests catch, in a second and offline, the mistakes that
would only show up there: a dependency added to pyproject.toml but not pinned
for the bundle, a pin outside pyproject's range, a script that does not parse,
or an installer that puts fleetd where the systemd unit does not look.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
ARM64 = REPO / "arm64"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The bundle's target: CPython 3.11 on aarch64 Linux.
TARGET = {key: str(value) for key, value in default_environment().items()} | {
    "python_version": "3.11",
    "platform_machine": "aarch64",
}


def pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a constraints/requirements file, by canonical name."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: '{line}' is not pinned with =="
            found[canonicalize_name(name)] = version
    return found


def requirements(key: str) -> list[Requirement]:
    section, field = key.split(".")
    reqs = [Requirement(text) for text in PYPROJECT[section][field]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET)]


class TestConstraints:
    @pytest.mark.parametrize("key", ["project.dependencies", "build-system.requires"])
    def test_every_requirement_is_pinned_inside_its_pyproject_range(self, key: str) -> None:
        pinned = pins(ARM64 / "constraints.txt")
        for req in requirements(key):
            name = canonicalize_name(req.name)
            assert name in pinned, (
                f"{req.name} ({key}) is not in arm64/constraints.txt: run arm64/build.sh --lock"
            )
            assert req.specifier.contains(pinned[name], prereleases=True), (
                f"arm64/constraints.txt pins {name}=={pinned[name]}, outside pyproject's '{req}': "
                "run arm64/build.sh --lock"
            )

    def test_markers_for_older_pythons_are_left_out(self) -> None:
        assert "tomli" not in pins(ARM64 / "constraints.txt")

    def test_the_check_pins_pytest_and_the_plugins_pyproject_configures(self) -> None:
        pinned = pins(ARM64 / "check-requirements.txt")
        assert {"pytest", "pytest-asyncio", "pytest-timeout"} <= pinned.keys()


class TestScripts:
    @pytest.mark.parametrize("script", ["build.sh", "check.sh", "install.sh"])
    def test_scripts_are_executable_bash_that_parses(self, script: str) -> None:
        path = ARM64 / script
        assert os.access(path, os.X_OK), f"arm64/{script} is not executable (chmod +x)"
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"arm64/{script}: {result.stderr}"

    def test_the_unit_runs_the_fleetd_that_install_sh_installs(self) -> None:
        unit = REPO / "systemd" / "fleetd.service"
        assert unit.is_file(), "the bundle ships systemd/fleetd.service"
        installer = (ARM64 / "install.sh").read_text()
        prefix = re.search(r"^PREFIX=(\S+)$", installer, re.MULTILINE)
        etc = re.search(r"^ETC=(\S+)$", installer, re.MULTILINE)
        assert prefix, "arm64/install.sh no longer sets PREFIX="
        assert etc, "arm64/install.sh no longer sets ETC="
        exec_start = re.search(r"^ExecStart=(\S+) run --config (\S+)", unit.read_text(), re.MULTILINE)
        assert exec_start, "systemd/fleetd.service has no 'ExecStart=... run --config ...' line"
        assert exec_start.group(1) == f"{prefix.group(1)}/venv/bin/fleetd"
        assert exec_start.group(2) == f"{etc.group(1)}/fleetd.toml"

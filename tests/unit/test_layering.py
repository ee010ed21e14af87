"""Each third-party library enters fleetd through one module, and the engine never depends on the test bed.

The design rule ("kubernetes-asyncio only in the Kubernetes client module,
pygit2 only in the git source module, subprocesses only in their modules")
is checked here by reading every module's imports, so a shortcut fails the
build instead of eroding the layering quietly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fleetd"

#: library -> the only modules (paths relative to fleetd/) allowed to import it.
DOORS = {
    "kubernetes_asyncio": {"kube.py"},
    "pygit2": {"source.py"},
    "pyrage": {"sops/keys.py"},
    "gnupg": {"sops/keys.py"},
    "prometheus_client": {"metrics.py"},
    "subprocess": {
        "kustomize.py",
        "sops/binary.py",
        "testbed/build.py",
        "testbed/demo.py",
        "testbed/processes.py",
    },
    "aiohttp": {"kube.py", "web.py", "control.py"},
}
#: Engine modules may reach the test bed only where documented (a development fallback).
TESTBED_ALLOWED = {"kustomize.py"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Attribute) and node.attr == "create_subprocess_exec":
            found.add("subprocess")
    return found


MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_third_party_libraries_enter_only_through_their_module(module: str) -> None:
    used = imports(PACKAGE / module)
    for library, doors in DOORS.items():
        if any(name == library or name.startswith(library + ".") for name in used):
            assert module in doors, f"{module} imports {library}; only {sorted(doors)} may"


@pytest.mark.parametrize("module", [m for m in MODULES if not m.startswith("testbed/")])
def test_the_engine_does_not_depend_on_the_test_bed(module: str) -> None:
    used = imports(PACKAGE / module)
    if any(name.startswith("fleetd.testbed") for name in used):
        assert module in TESTBED_ALLOWED, f"{module} imports the test bed"

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
    "kubernetes_asyncio": {"kube/client.py"},
    "pygit2": {"source/libgit.py"},
    "pyrage": {"secrets/keys.py"},
    "gnupg": {"secrets/keys.py"},
    "prometheus_client": {"api/metrics.py"},
    "yaml": {"util/yamldoc.py"},
    "subprocess": {"render/kustomize.py", "secrets/binary.py", "kube/credentials.py"},
    # The HTTP server: its lifecycle and fixed endpoints (http), the web UI and API routes (routes);
    # notifications POST to webhooks and forges (notify/post).
    "aiohttp": {
        "kube/client.py",
        "api/http.py",
        "api/routes.py",
        "api/control.py",
        "source/github_app.py",
        "notify/post.py",
    },
    "apprise": {"notify/chat.py"},
    "mcp": {"mcp/server.py"},
}
#: The composition root wires every stage together, the HTTP surface included.
COMPOSITION_ROOT = {"daemon/root.py"}
#: Pipeline order: a package may import only from packages before it (and from itself).
PIPELINE = [
    "util",
    "errors",
    "inventory",
    "source",
    "secrets",
    "render",
    "kube",
    "reconcile",
    "shard",
    "daemon",
    "notify",
    "api",
    "mcp",
    "cli",
]


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


@pytest.mark.parametrize("module", MODULES)
def test_the_engine_does_not_depend_on_the_test_bed(module: str) -> None:
    used = imports(PACKAGE / module)
    assert not any(name == "testbed" or name.startswith("testbed.") for name in used), (
        f"{module} imports the test bed"
    )


def _package(module: str) -> str:
    return module.split("/")[0].removesuffix(".py")


@pytest.mark.parametrize("module", [m for m in MODULES if "/" in m])
def test_packages_import_only_earlier_stages_of_the_pipeline(module: str) -> None:
    own = _package(module)
    if own not in PIPELINE:
        return
    rank = len(PIPELINE) if module in COMPOSITION_ROOT else PIPELINE.index(own)
    for name in imports(PACKAGE / module):
        if not name.startswith("fleetd."):
            continue
        other = name.split(".")[1]
        if other in PIPELINE:
            assert PIPELINE.index(other) <= rank, f"{module} ({own}) imports {name}, a later stage"


def test_every_engine_module_sits_in_a_pipeline_package() -> None:
    loose = [m for m in MODULES if "/" not in m and m not in {"__init__.py", "__main__.py", "errors.py"}]
    assert not loose, f"modules outside the pipeline packages: {loose}"

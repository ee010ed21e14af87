"""Build the test bed's binaries from Go modules, once, into a cache outside the repo.

Kubernetes' own binaries cannot be ``go install``-ed at a version because
``k8s.io/kubernetes`` replaces every staging module with a local path. The
known way around it is a tiny *tools module* that requires
``k8s.io/kubernetes`` and pins every staging module to its published
``v0.Y.Z`` twin. etcd's server module has replace directives too and gets
the same treatment. kwok, sops and kustomize install cleanly with
``go install pkg@version``; each gets its own ``GOBIN`` so their dependency
graphs never meet.

Everything lives under one cache root (``$FLEETD_TESTBED_CACHE``, default
``~/.cache/fleetd-testbed``): the Go module and build caches, the tools
modules and a ``bin/`` directory per pinned version set. A finished build
writes a stamp file, so a warm call returns in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
SOPS_VERSION = "v3.13.3"
KUSTOMIZE_VERSION = "v5.8.2"

#: Staging modules that k8s.io/kubernetes replaces with ./staging/... at K8S_VERSION.
K8S_STAGING = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "cri-streaming",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
    "streaming",
)

K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
BINARIES = (*K8S_COMMANDS, "etcd", "kwok", "sops", "kustomize")
GO_DIRECTIVE = "1.26.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Toolset:
    """Where the built binaries of one pinned version set live."""

    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def path(self, name: str) -> Path:
        """Absolute path of one test-bed binary (``etcd``, ``kube-apiserver``, ...)."""
        return self.bin_dir / name

    @property
    def complete(self) -> bool:
        return (self.root / "stamp").exists() and all(self.path(b).exists() for b in BINARIES)


def cache_root() -> Path:
    """The cache directory shared by every build (outside the repository)."""
    env = os.environ.get("FLEETD_TESTBED_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fleetd-testbed"


def version_key() -> str:
    pins = f"{K8S_VERSION} {ETCD_VERSION} {KWOK_VERSION} {SOPS_VERSION} {KUSTOMIZE_VERSION}"
    return hashlib.sha256(pins.encode()).hexdigest()[:12]


def toolset() -> Toolset:
    """The toolset for the pinned versions (it may not be built yet)."""
    return Toolset(root=cache_root() / f"tools-{version_key()}")


def _go_env(work: Path) -> dict[str, str]:
    root = cache_root()
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOFLAGS="-mod=mod -trimpath",
        GOMODCACHE=str(root / "gomodcache"),
        GOCACHE=str(root / "gocache"),
        GOPATH=str(root / "gopath"),
        GOWORK="off",
        GOTMPDIR=str(work),
    )
    return env


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    print(f"testbed build: go {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run(["go", *args], cwd=cwd, env=env, check=True)


def _k8s_ldflags() -> str:
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return (
        f"-s -w -X {pkg}.gitVersion={K8S_VERSION} -X {pkg}.gitMajor={major} "
        f"-X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"
    )


def _build_kubernetes(tools: Toolset, src: Path, env: dict[str, str]) -> None:
    mod = src / "k8s"
    mod.mkdir(parents=True, exist_ok=True)
    staging_v = "v0." + K8S_VERSION.split(".", 1)[1]
    replaces = "\n".join(f"\tk8s.io/{m} => k8s.io/{m} {staging_v}" for m in K8S_STAGING)
    (mod / "go.mod").write_text(
        f"module fleetd.invalid/testbed/k8s\n\ngo {GO_DIRECTIVE}\n\n"
        f"require k8s.io/kubernetes {K8S_VERSION}\n\nreplace (\n{replaces}\n)\n"
    )
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS]
    _go(["get", *(f"{p}@{K8S_VERSION}" for p in pkgs)], mod, env)
    _go(["build", "-ldflags", _k8s_ldflags(), "-o", str(tools.bin_dir) + "/", *pkgs], mod, env)


def _build_etcd(tools: Toolset, src: Path, env: dict[str, str]) -> None:
    mod = src / "etcd"
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "go.mod").write_text(f"module fleetd.invalid/testbed/etcd\n\ngo {GO_DIRECTIVE}\n")
    _go(["get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], mod, env)
    _go(["build", "-ldflags", "-s -w", "-o", str(tools.path("etcd")), "go.etcd.io/etcd/server/v3"], mod, env)


def _go_install(tools: Toolset, pkg: str, env: dict[str, str], cwd: Path) -> None:
    _go(["install", "-ldflags", "-s -w", pkg], cwd, {**env, "GOBIN": str(tools.bin_dir)})


def build(*, force: bool = False) -> Toolset:
    """Build every missing binary of the pinned toolset and return it."""
    tools = toolset()
    if tools.complete and not force:
        return tools
    tools.bin_dir.mkdir(parents=True, exist_ok=True)
    src = tools.root / "src"
    work = cache_root() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    env = _go_env(work)
    started = time.monotonic()
    if force or not all(tools.path(c).exists() for c in K8S_COMMANDS):
        _build_kubernetes(tools, src, env)
    if force or not tools.path("etcd").exists():
        _build_etcd(tools, src, env)
    installs = {
        "kwok": f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
        "sops": f"github.com/getsops/sops/v3/cmd/sops@{SOPS_VERSION}",
        "kustomize": f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}",
    }
    for name, pkg in installs.items():
        if force or not tools.path(name).exists():
            _go_install(tools, pkg, env, work)
    (tools.root / "stamp").write_text(f"built in {time.monotonic() - started:.0f}s\n")
    shutil.rmtree(work, ignore_errors=True)
    return tools


def put_tools_on_path() -> None:
    """Let fleetd find the test bed's sops and kustomize the way a hub finds them: on PATH."""
    bin_dir = str(toolset().bin_dir)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in parts:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *parts])

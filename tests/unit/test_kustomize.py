"""The kustomize boundary, against the real kustomize binary of the test bed.

Only the timeout test uses a stand-in: a shell script that never finishes,
named as such, because a real kustomize cannot be made to hang on purpose.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from fleetd import kustomize
from fleetd.kustomize import KustomizeError, build, environment, find_binary, is_remote
from fleetd.testbed.build import toolset

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(scope="session")
def kustomize_bin() -> Path:
    path = toolset().path("kustomize")
    assert path.is_file(), "build the test bed first: python -m fleetd.testbed build"
    return path


def write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


BASE = {
    "base/kustomization.yaml": "resources: [config.yaml]\n",
    "base/config.yaml": """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings}
        data: {level: info}
        """,
}


class TestBuilding:
    async def test_an_overlay_patches_its_base(self, tmp_path: Path, kustomize_bin: Path) -> None:
        write(tmp_path, BASE)
        write(
            tmp_path,
            {
                "overlay/kustomization.yaml": """\
                    resources: [../base]
                    patches:
                    - path: level.yaml
                    """,
                "overlay/level.yaml": """\
                    apiVersion: v1
                    kind: ConfigMap
                    metadata: {name: settings}
                    data: {level: debug}
                    """,
            },
        )
        output = await build(tmp_path / "overlay", root=tmp_path, binary=kustomize_bin)
        assert "level: debug" in output
        assert "name: settings" in output

    async def test_a_failing_build_reports_kustomizes_message_and_the_directory(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(tmp_path, {"apps/web/kustomization.yaml": "resources: [missing.yaml]\n"})
        with pytest.raises(KustomizeError) as caught:
            await build(tmp_path / "apps/web", root=tmp_path, binary=kustomize_bin)
        assert caught.value.directory == "apps/web"
        assert str(caught.value).startswith("apps/web: kustomize build failed: Error:")
        assert "missing.yaml" in str(caught.value)
        assert not caught.value.temporary


class TestLockdown:
    @pytest.mark.parametrize(
        "reference",
        [
            "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0",
            "github.com/kubernetes-sigs/kustomize/examples/helloWorld?ref=v5.0.0",
            "git@github.com:example/repo.git",
            "https://raw.githubusercontent.com/example/repo/main/deploy.yaml",
        ],
    )
    async def test_remote_bases_are_refused_with_a_hint_to_vendor_them(
        self, tmp_path: Path, kustomize_bin: Path, reference: str
    ) -> None:
        write(tmp_path, {"app/kustomization.yaml": f"resources:\n- {reference}\n"})
        with pytest.raises(KustomizeError, match=r"remote reference.*vendor it") as caught:
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin)
        assert caught.value.directory == "app/kustomization.yaml"

    async def test_a_remote_reference_in_a_local_base_is_refused_too(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(
            tmp_path,
            {
                "base/kustomization.yaml": "resources:\n- https://example.org/deploy.yaml\n",
                "overlay/kustomization.yaml": "resources: [../base]\n",
            },
        )
        with pytest.raises(KustomizeError, match=r"^base/kustomization.yaml: resources entry"):
            await build(tmp_path / "overlay", root=tmp_path, binary=kustomize_bin)

    def test_remote_references_are_told_apart_from_local_paths(self) -> None:
        assert is_remote("ssh://git@example.org/repo.git")
        assert is_remote("gitlab.com/group/repo/deploy")
        assert not is_remote("../base")
        assert not is_remote("deployment.yaml")

    async def test_without_the_check_the_build_environment_still_reaches_no_network(
        self, tmp_path: Path, kustomize_bin: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(kustomize, "check_references", lambda directory, root: None)
        write(tmp_path, {"app/kustomization.yaml": "resources:\n- https://github.com/example/repo\n"})
        with pytest.raises(KustomizeError, match=r"not allowed|proxyconnect"):
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin)

    async def test_bases_outside_the_repository_are_refused(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        repo = tmp_path / "repo"
        write(tmp_path, {"outside/kustomization.yaml": "resources: []\n"})
        write(repo, {"app/kustomization.yaml": "resources: [../../outside]\n"})
        with pytest.raises(KustomizeError, match="points outside the repository"):
            await build(repo / "app", root=repo, binary=kustomize_bin)

    async def test_a_symbolic_link_out_of_the_repository_is_refused(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        repo = tmp_path / "repo"
        write(tmp_path, {"outside/kustomization.yaml": "resources: []\n"})
        write(repo, {"app/kustomization.yaml": "resources: [linked]\n"})
        (repo / "app/linked").symlink_to(tmp_path / "outside")
        with pytest.raises(KustomizeError, match="'linked' points outside the repository"):
            await build(repo / "app", root=repo, binary=kustomize_bin)

    async def test_exec_functions_are_not_run(self, tmp_path: Path, kustomize_bin: Path) -> None:
        marker = tmp_path / "function-ran"
        write(tmp_path, BASE)
        write(
            tmp_path,
            {
                "base/fn.sh": f"#!/bin/sh\ntouch {marker}\ncat\n",
                "base/kustomization.yaml": """\
                    resources: [config.yaml]
                    transformers:
                    - |-
                      apiVersion: example.com/v1
                      kind: Stamp
                      metadata:
                        name: stamp
                        annotations:
                          config.kubernetes.io/function: |
                            exec:
                              path: ./fn.sh
                    """,
            },
        )
        (tmp_path / "base/fn.sh").chmod(0o755)
        with pytest.raises(KustomizeError, match="external plugins disabled"):
            await build(tmp_path / "base", root=tmp_path, binary=kustomize_bin)
        assert not marker.exists()

    async def test_generator_plugins_are_not_loaded(
        self, tmp_path: Path, kustomize_bin: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("KUSTOMIZE_PLUGIN_HOME", str(tmp_path / "plugins"))
        write(
            tmp_path,
            {
                "app/kustomization.yaml": "generators: [generator.yaml]\n",
                "app/generator.yaml": """\
                    apiVersion: someteam.example.com/v1
                    kind: SecretMaker
                    metadata: {name: maker}
                    """,
            },
        )
        with pytest.raises(KustomizeError, match="external plugins disabled"):
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin)

    async def test_helm_charts_are_not_inflated(self, tmp_path: Path, kustomize_bin: Path) -> None:
        write(
            tmp_path,
            {
                "app/kustomization.yaml": """\
                    helmCharts:
                    - name: podinfo
                    """
            },
        )
        with pytest.raises(KustomizeError, match="--enable-helm"):
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin)

    def test_the_build_environment_holds_nothing_of_the_daemons_but_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("KUSTOMIZE_PLUGIN_HOME", "/plugins")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        env = environment(tmp_path)
        assert env["HOME"] == str(tmp_path)
        assert "KUSTOMIZE_PLUGIN_HOME" not in env
        assert "AWS_SECRET_ACCESS_KEY" not in env
        assert env["GIT_ALLOW_PROTOCOL"] == "none"


class TestTimeouts:
    async def test_a_stuck_binary_is_killed_with_its_children_at_the_timeout(self, tmp_path: Path) -> None:
        pid_file = tmp_path / "child.pid"
        stuck = tmp_path / "stuck-binary"
        stuck.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {pid_file}\nwait\n")
        stuck.chmod(0o755)
        write(tmp_path, {"app/kustomization.yaml": "resources: []\n"})
        started = time.monotonic()
        with pytest.raises(KustomizeError, match=r"did not finish within 0.5s") as caught:
            await build(tmp_path / "app", root=tmp_path, binary=stuck, timeout=0.5)
        assert time.monotonic() - started < 3
        assert caught.value.temporary
        assert_gone(int(pid_file.read_text()))


def assert_gone(pid: int, deadline: float = 3.0) -> None:
    """The process has exited (a zombie waiting for an absent reaper counts as exited)."""
    status = Path(f"/proc/{pid}/status")
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not status.exists() or "\nState:\tZ" in status.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs")


class TestFindingTheBinary:
    def test_an_explicit_binary_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FLEETD_KUSTOMIZE", "/from/env/kustomize")
        assert find_binary("/explicit/kustomize") == Path("/explicit/kustomize")

    def test_the_environment_variable_comes_next(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FLEETD_KUSTOMIZE", "/from/env/kustomize")
        assert find_binary() == Path("/from/env/kustomize")

    def test_then_path_then_the_test_bed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kustomize_bin: Path
    ) -> None:
        monkeypatch.delenv("FLEETD_KUSTOMIZE", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
        assert find_binary() == kustomize_bin
        (tmp_path / "kustomize").symlink_to(kustomize_bin)
        assert find_binary() == tmp_path / "kustomize"

    def test_a_name_not_on_path_is_a_temporary_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(KustomizeError, match="'kustomize-v9' not found on PATH") as caught:
            find_binary("kustomize-v9")
        assert caught.value.temporary

    async def test_a_binary_that_cannot_run_is_a_temporary_error(self, tmp_path: Path) -> None:
        write(tmp_path, {"app/kustomization.yaml": "resources: []\n"})
        with pytest.raises(KustomizeError, match="cannot run /nonexistent/kustomize") as caught:
            await build(tmp_path / "app", root=tmp_path, binary="/nonexistent/kustomize")
        assert caught.value.temporary

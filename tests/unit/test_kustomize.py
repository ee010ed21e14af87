"""The kustomize boundary, against the real kustomize binary of the test bed.

Stand-ins, named as such, only where a real kustomize cannot show it: a
shell script that never finishes (timeouts, cancellation) and one that
reports the files it was given (the private copy's modes). SOPS is stood in
for by `FakeSops`, which undoes values written as ``ENC[…,data:<base64>,…]``:
these tests are about the copy, `tests/unit/test_render.py` and
`tests/integration/test_secrets.py` use the real sops.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import stat
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetd.render import kustomize
from fleetd.render.kustomize import KustomizeError, build, environment, find_binary, is_remote
from fleetd.secrets.sops import MacMismatch
from testbed.build import toolset

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="session")
def kustomize_bin() -> Path:
    path = toolset().path("kustomize")
    assert path.is_file(), "build the test bed first: python -m testbed build"
    return path


async def built_text(directory: Path, **options: Any) -> str:
    """What `build` printed, as text."""
    return (await build(directory, **options)).output.decode()


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
        output = await built_text(tmp_path / "overlay", root=tmp_path, binary=kustomize_bin)
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


class TestLimits:
    async def test_at_most_max_concurrent_builds_run_at_once(self, tmp_path: Path) -> None:
        running, log = tmp_path / "running", tmp_path / "log"
        running.mkdir()
        counting = tmp_path / "stand-in-kustomize"  # counts the builds running with it, instead of building
        counting.write_text(
            f"#!/bin/sh\ntouch {running}/$$\nls {running} | wc -l >> {log}\nsleep 0.3\nrm {running}/$$\n"
        )
        counting.chmod(0o755)
        write(tmp_path, {"app/kustomization.yaml": "resources: []\n"})
        await asyncio.gather(*(build(tmp_path / "app", root=tmp_path, binary=counting) for _ in range(10)))
        seen = [int(line) for line in log.read_text().split()]
        assert len(seen) == 10
        assert 2 <= max(seen) <= kustomize.MAX_CONCURRENT_BUILDS == 4

    async def test_output_past_the_limit_fails_the_build_and_stops_the_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(kustomize, "MAX_OUTPUT_BYTES", 100_000)
        endless = tmp_path / "stand-in-kustomize"  # prints without end, as no real build can be made to
        endless.write_text("#!/bin/sh\nexec yes\n")
        endless.chmod(0o755)
        write(tmp_path, {"app/kustomization.yaml": "resources: []\n"})
        with pytest.raises(KustomizeError, match=r"^app: kustomize build printed more than 100000 bytes"):
            await build(tmp_path / "app", root=tmp_path, binary=endless)


class TestFindingTheBinary:
    def test_an_explicit_binary_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FLEETD_KUSTOMIZE", "/from/env/kustomize")
        assert find_binary("/explicit/kustomize") == Path("/explicit/kustomize")

    def test_the_environment_variable_comes_next(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FLEETD_KUSTOMIZE", "/from/env/kustomize")
        assert find_binary() == Path("/from/env/kustomize")

    def test_then_path_and_never_the_test_bed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kustomize_bin: Path
    ) -> None:
        monkeypatch.delenv("FLEETD_KUSTOMIZE", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(KustomizeError, match="not found on PATH"):
            find_binary()
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


# --- SOPS-encrypted inputs --------------------------------------------------------------------

ENC = re.compile(r"ENC\[AES256_GCM,data:(.*?),iv:[^,]*,tag:[^,]*,type:str\]")


def enc(value: str) -> str:
    """A value as a stand-in for sops writes it: base64, so the fake can undo it."""
    return f"ENC[AES256_GCM,data:{base64.b64encode(value.encode()).decode()},iv:i,tag:t,type:str]"


FAKE_META = {"mac": enc("the-mac"), "lastmodified": "2024-01-01T00:00:00Z"}


def fake_dotenv(**values: str) -> str:
    lines = [f"{key}={enc(value)}" for key, value in values.items()]
    return "\n".join([*lines, f"sops_mac={FAKE_META['mac']}", "sops_lastmodified=2024-01-01T00:00:00Z", ""])


def fake_binary(plain: str) -> str:
    return json.dumps({"data": enc(plain), "sops": FAKE_META})


def fake_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump({**doc, "sops": FAKE_META})


class FakeSops:
    """A stand-in for the decryption hook: undoes `enc`, drops the metadata, records the calls."""

    def __init__(self, on_call: Callable[[], None] | None = None) -> None:
        self.calls: list[str] = []
        self.on_call = on_call

    def __call__(self, data: bytes, fmt: str) -> bytes:
        self.calls.append(fmt)
        if self.on_call:
            self.on_call()
        text = ENC.sub(lambda m: base64.b64decode(m.group(1)).decode(), data.decode())
        if fmt == "dotenv":
            return "".join(f"{ln}\n" for ln in text.splitlines() if not ln.startswith("sops_")).encode()
        doc = json.loads(text) if fmt in ("json", "binary") else yaml.safe_load(text)
        doc.pop("sops")
        return str(doc["data"]).encode() if fmt == "binary" else yaml.safe_dump(doc).encode()


def generator_app(root: Path) -> None:
    write(
        root,
        {
            "app/kustomization.yaml": """\
                secretGenerator:
                - name: creds
                  envs: [creds.env, plain.env]
                  files: [token=token.bin]
                """,
            "app/creds.env": fake_dotenv(PASSWORD="hunter2-dotenv"),
            "app/plain.env": "MODE=plain\n",
            "app/token.bin": fake_binary("hunter2-binary"),
        },
    )


def secret_data(output: str) -> dict[str, str]:
    (secret,) = yaml.safe_load_all(output)
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime directory of the test's own (the first place private copies go), so leftovers of
    other processes do not count."""
    tmp = tmp_path / "runtime"
    tmp.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp))
    return tmp


class TestEncryptedInputs:
    async def test_encrypted_generator_inputs_are_decrypted_before_the_build(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        generator_app(tmp_path)
        hook = FakeSops()
        output = await built_text(tmp_path / "app", root=tmp_path, binary=kustomize_bin, decrypt=hook)
        assert secret_data(output) == {
            "PASSWORD": "hunter2-dotenv",
            "MODE": "plain",
            "token": "hunter2-binary",
        }
        assert sorted(hook.calls) == ["binary", "dotenv"]

    async def test_an_encrypted_resource_is_decrypted_before_kustomize_transforms_it(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "data": {"pw": enc("aHVudGVy")},
        }
        write(
            tmp_path,
            {
                "base/kustomization.yaml": "resources: [db.yaml]\n",
                "base/db.yaml": fake_yaml(secret),
                "overlay/kustomization.yaml": "namespace: prod\nnamePrefix: p-\nresources: [../base]\n",
            },
        )
        output = await built_text(
            tmp_path / "overlay", root=tmp_path, binary=kustomize_bin, decrypt=FakeSops()
        )
        (built,) = yaml.safe_load_all(output)
        assert built["metadata"] == {"name": "p-db", "namespace": "prod"}
        assert built["data"] == {"pw": "aHVudGVy"}
        assert "sops" not in built

    async def test_files_are_recognised_as_encrypted_by_their_content_not_their_name(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(
            tmp_path,
            {
                "app/kustomization.yaml": "secretGenerator:\n- name: s\n  envs: [creds.txt, plain.env]\n",
                "app/creds.txt": fake_dotenv(A="from-txt"),
                "app/plain.env": "B=plain\n",
            },
        )
        hook = FakeSops()
        output = await built_text(tmp_path / "app", root=tmp_path, binary=kustomize_bin, decrypt=hook)
        assert secret_data(output) == {"A": "from-txt", "B": "plain"}
        assert hook.calls == ["dotenv"]

    async def test_without_keys_the_build_fails_naming_the_encrypted_file(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        generator_app(tmp_path)
        with pytest.raises(KustomizeError) as caught:
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin)
        assert caught.value.directory in ("app/creds.env", "app/token.bin")
        assert "SOPS-encrypted but no decryption keys are configured ([decryption]" in str(caught.value)
        assert not caught.value.temporary

    async def test_a_failing_hook_fails_the_build_with_its_message_for_that_file(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(tmp_path, {"app/kustomization.yaml": "secretGenerator:\n- name: s\n  envs: [creds.env]\n"})
        write(tmp_path, {"app/creds.env": fake_dotenv(A="x")})

        def failing(data: bytes, fmt: str) -> bytes:
            raise MacMismatch("<memory>", "the MAC does not match the content")

        with pytest.raises(KustomizeError) as caught:
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin, decrypt=failing)
        assert str(caught.value) == "app/creds.env: cannot decrypt: the MAC does not match the content"

    async def test_a_truncated_sops_file_is_refused_rather_than_applied_as_ciphertext(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(tmp_path, {"app/kustomization.yaml": "secretGenerator:\n- name: s\n  envs: [creds.env]\n"})
        write(tmp_path, {"app/creds.env": fake_dotenv(A="x").split("sops_mac")[0]})
        with pytest.raises(KustomizeError, match=r"^app/creds.env: holds SOPS-encrypted values .* truncated"):
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin, decrypt=FakeSops())


class TestThePrivateCopy:
    async def test_it_is_a_0700_directory_outside_the_repository_and_gone_after_the_build(
        self, tmp_path: Path, kustomize_bin: Path, private_tmp: Path
    ) -> None:
        generator_app(tmp_path / "repo")
        seen: list[tuple[Path, int]] = []

        def look() -> None:
            seen.extend((p, stat.S_IMODE(p.stat().st_mode)) for p in private_tmp.iterdir())

        await build(
            tmp_path / "repo/app", root=tmp_path / "repo", binary=kustomize_bin, decrypt=FakeSops(look)
        )
        assert seen
        assert all(mode == 0o700 and p.name.startswith("fleetd-kustomize-") for p, mode in seen)
        assert leftovers(private_tmp) == []

    async def test_kustomize_reads_plaintext_files_only_their_owner_may_read(
        self, tmp_path: Path, private_tmp: Path
    ) -> None:
        generator_app(tmp_path)
        stand_in = tmp_path / "stand-in-kustomize"  # reports what it was given instead of building
        stand_in.write_text('#!/bin/sh\nstat -c "%a" "$4/creds.env" "$4/../.."\ncat "$4/creds.env"\n')
        stand_in.chmod(0o755)
        output = await built_text(tmp_path / "app", root=tmp_path, binary=stand_in, decrypt=FakeSops())
        assert output.splitlines() == ["600", "700", "PASSWORD=hunter2-dotenv"]
        assert leftovers(private_tmp) == []

    async def test_symbolic_links_are_copied_as_links_and_never_followed(
        self, tmp_path: Path, kustomize_bin: Path, private_tmp: Path
    ) -> None:
        repo = tmp_path / "repo"
        generator_app(repo)
        (tmp_path / "outside.txt").write_text("not for the copy")
        (repo / "app/linked.txt").symlink_to(tmp_path / "outside.txt")
        links: list[bool] = []

        def look() -> None:
            (copy,) = private_tmp.iterdir()
            links.append((copy / "tree/app/linked.txt").is_symlink())

        await build(repo / "app", root=repo, binary=kustomize_bin, decrypt=FakeSops(look))
        assert set(links) == {True}

    async def test_it_is_removed_after_a_failed_build_whose_message_names_repository_paths(
        self, tmp_path: Path, kustomize_bin: Path, private_tmp: Path
    ) -> None:
        generator_app(tmp_path)
        write(tmp_path, {"app/kustomization.yaml": "resources: [missing.yaml]\n" + GENERATOR})
        with pytest.raises(KustomizeError, match=r"missing\.yaml") as caught:
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin, decrypt=FakeSops())
        assert "fleetd-kustomize-" not in str(caught.value)
        assert leftovers(private_tmp) == []

    async def test_kustomize_messages_about_decrypted_content_do_not_show_it(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": [enc("hunter2-ns")]},
        }
        write(tmp_path, {"app/kustomization.yaml": "namespace: x\nresources: [db.yaml]\n"})
        write(tmp_path, {"app/db.yaml": fake_yaml(secret)})
        with pytest.raises(KustomizeError, match="node contents") as caught:
            await build(tmp_path / "app", root=tmp_path, binary=kustomize_bin, decrypt=FakeSops())
        assert "hunter2" not in str(caught.value)
        assert "[redacted]" in str(caught.value)

    async def test_it_is_removed_after_a_timeout(self, tmp_path: Path, private_tmp: Path) -> None:
        generator_app(tmp_path)
        with pytest.raises(KustomizeError, match="did not finish"):
            await build(
                tmp_path / "app",
                root=tmp_path,
                binary=stuck_binary(tmp_path),
                decrypt=FakeSops(),
                timeout=0.5,
            )
        assert leftovers(private_tmp) == []

    async def test_it_is_removed_when_the_build_is_cancelled(self, tmp_path: Path, private_tmp: Path) -> None:
        generator_app(tmp_path)
        stuck = stuck_binary(tmp_path)
        task = asyncio.create_task(build(tmp_path / "app", root=tmp_path, binary=stuck, decrypt=FakeSops()))
        await asyncio.to_thread(wait_for, tmp_path / "child.pid")
        assert leftovers(private_tmp), "the build should be running on its private copy"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert leftovers(private_tmp) == []
        assert_gone(int((tmp_path / "child.pid").read_text()))


def leftovers(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def wait_for(path: Path, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.02)


GENERATOR = "secretGenerator:\n- name: creds\n  envs: [creds.env]\n"


def stuck_binary(directory: Path) -> Path:
    """A stand-in for kustomize that never finishes (a real one cannot be made to hang)."""
    stuck = directory / "stuck-binary"
    stuck.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {directory / 'child.pid'}\nwait\n")
    stuck.chmod(0o755)
    return stuck

"""Decrypted files for kustomize live where a crash cannot leave them, and child processes die with fleetd.

The crash tests run a real build (real sops-encrypted input, fleetd's real
decryption hook) in a child Python process and ``kill -9`` it mid-build. A
stand-in takes kustomize's place, named as such: a real kustomize finishes
too fast to be killed in the middle. The stand-in ``exec``s ``sleep``, so the
process fleetd started is the one that must die.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.render import sweep_stale_workdirs, workdir
from fleetd.util import children
from tests.unit.test_render import SOPS, Sops

pytestmark = pytest.mark.timeout(60)

REPOSITORY = Path(__file__).resolve().parents[2]
CANARY = "canary-4b1d-plaintext"


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runtime directory of the test's own: the first place working directories go."""
    path = tmp_path / "runtime"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    return path


def wait_for(check: object, what: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while not (check() if callable(check) else check):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "\nState:\tZ" in status.read_text()


def stand_in(path: Path, pid_file: Path) -> Path:
    """A stand-in for kustomize or sops that records its pid and never finishes."""
    path.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    path.chmod(0o755)
    return path


def stop_stand_in(pid_file: Path) -> None:
    """Kill the stand-in the test made, should fleetd have failed to."""
    text = pid_file.read_text().strip() if pid_file.exists() else ""
    if text and not gone(int(text)):
        os.kill(int(text), signal.SIGKILL)


def files_under(directory: Path) -> Iterator[Path]:
    return (path for path in directory.rglob("*") if path.is_file())


class TestWhereWorkingDirectoriesGo:
    def test_a_private_runtime_directory_comes_first_and_entries_are_0700(self, runtime: Path) -> None:
        made = workdir.make_workdir()
        try:
            assert made.parent == runtime
            assert made.name.startswith(f"fleetd-kustomize-{os.getpid()}.")
            assert made.stat().st_mode & 0o777 == 0o700
        finally:
            workdir.remove_workdir(made)

    def test_a_runtime_directory_others_can_read_is_passed_over_for_a_tmpfs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
        bases = workdir.work_bases()
        assert shared not in bases
        assert bases[0] == Path("/dev/shm")


class TestTheStartupSweep:
    def test_it_removes_directories_of_processes_that_no_longer_run_and_keeps_the_rest(
        self, runtime: Path
    ) -> None:
        finished = subprocess.Popen(["true"])
        finished.wait()
        running = subprocess.Popen(["sleep", "30"])
        try:
            started = workdir._start_token(running.pid)
            dead = runtime / f"fleetd-kustomize-{finished.pid}.1-abc"
            alive = runtime / f"fleetd-kustomize-{running.pid}.{started}-def"
            reused = runtime / f"fleetd-kustomize-{running.pid}.999999999-ghi"
            unrelated = runtime / "fleetd-something-else"
            for directory in (dead, alive, reused, unrelated):
                (directory / "tree").mkdir(parents=True)
                (directory / "tree/secret.env").write_text(CANARY)
            own = workdir.make_workdir()
            assert sorted(p for p in sweep_stale_workdirs() if p.parent == runtime) == sorted([dead, reused])
            assert sorted(runtime.iterdir()) == sorted([alive, unrelated, own])
        finally:
            running.kill()
            running.wait()


BUILD_AND_WAIT = """
import asyncio, sys
from pathlib import Path
from fleetd.inventory.model import Decryption
from fleetd.render.kustomize import build
from fleetd.secrets.decryptor import decryptor

root, binary, key = (Path(arg) for arg in sys.argv[1:4])
hook = decryptor(Decryption(age_key_files=(key,)))
asyncio.run(build(root / "app", root=root, binary=binary, decrypt=hook))
"""

SOPS_AND_WAIT = """
import sys
from fleetd.secrets import binary

binary.decrypt(
    b"{}", "json", executable=sys.argv[1], file="x.json", age_keys=b"", gnupg_home=None, timeout=60
)
"""


@pytest.fixture(scope="module")
def sops(tmp_path_factory: pytest.TempPathFactory) -> Sops:
    assert SOPS.is_file(), f"sops is not built at {SOPS}: run `python -m testbed build`"
    return Sops(tmp_path_factory.mktemp("sops"))


class TestAKill9MidBuild:
    def test_kustomize_dies_with_fleetd_and_the_sweep_leaves_no_plaintext(
        self, tmp_path: Path, runtime: Path, sops: Sops
    ) -> None:
        repo = tmp_path / "repo"
        (repo / "app").mkdir(parents=True)
        (repo / "app/kustomization.yaml").write_text("secretGenerator:\n- name: creds\n  envs: [creds.env]\n")
        (repo / "app/creds.env").write_text(sops.encrypt("creds.env", f"PASSWORD={CANARY}\n"))
        pid_file = tmp_path / "kustomize.pid"
        kustomize = stand_in(tmp_path / "stand-in-kustomize", pid_file)
        fleetd = subprocess.Popen(
            [sys.executable, "-c", BUILD_AND_WAIT, str(repo), str(kustomize), str(sops.key_file)],
            cwd=REPOSITORY,
            env=os.environ | {"XDG_RUNTIME_DIR": str(runtime)},
        )
        try:
            wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the build to start")
            plaintext = [p for p in files_under(runtime) if CANARY in p.read_text(errors="replace")]
            assert plaintext, "the build should be reading decrypted input from the runtime directory"
            fleetd.send_signal(signal.SIGKILL)
            fleetd.wait()
            kustomize_pid = int(pid_file.read_text())
            wait_for(lambda: gone(kustomize_pid), "kustomize to die with its parent", deadline=5)
        finally:
            fleetd.kill()
            fleetd.wait()
            stop_stand_in(pid_file)
        assert len([p for p in sweep_stale_workdirs() if p.parent == runtime]) == 1
        assert list(runtime.iterdir()) == []

    def test_the_sops_binary_dies_with_fleetd(self, tmp_path: Path) -> None:
        pid_file = tmp_path / "sops.pid"
        stuck_sops = stand_in(tmp_path / "stand-in-sops", pid_file)
        fleetd = subprocess.Popen([sys.executable, "-c", SOPS_AND_WAIT, str(stuck_sops)], cwd=REPOSITORY)
        try:
            wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "sops to start")
            fleetd.send_signal(signal.SIGKILL)
            fleetd.wait()
            sops_pid = int(pid_file.read_text())
            wait_for(lambda: gone(sops_pid), "sops to die with its parent", deadline=5)
        finally:
            fleetd.kill()
            fleetd.wait()
            stop_stand_in(pid_file)


def test_off_linux_there_is_no_preexec_function_and_nothing_to_break(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert children._prctl() is None

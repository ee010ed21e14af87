"""``fleetd run`` as service managers run it: its own user, one per state directory, on a clock that jumps.

Each test starts the real ``fleetd run`` process against the real test bed:

* as an unprivileged user (``nobody``, as the systemd unit's ``User=``)
  with ``UMask=0077`` on a fresh state directory, and on one whose database
  that user cannot read: it converges, and everything it creates is private;
* a second daemon on the same state directory exits 2 naming the first,
  while the first keeps its control socket and the read-only commands
  (``status``, ``diff``) keep working;
* under libfaketime, with the wall clock set back an hour and then forward
  two: interval reconciles and interval fetches keep their pace, only the
  displayed times move.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(180)]

NOBODY = 65534
#: Debian's faketime package (any architecture): the multi-threaded libfaketime.
LIBFAKETIME = min(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"), default=Path("libfaketimeMT.so.1"))


@asynccontextmanager
async def daemon(
    config: Path, log: Path, *, wrapper: tuple[str, ...] = (), env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:  # fmt: skip
    """``fleetd run --config`` as a process (behind ``wrapper``, e.g. setpriv); SIGTERM on exit."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *wrapper, sys.executable, "-m", "fleetd", "run", "--config", str(config),
            stderr=out, env={**os.environ, **(env or {})}, preexec_fn=preexec,
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(20):
                        await proc.wait()
                finally:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()


def listen(config: Path) -> str:
    return config.read_text().split('listen = "', 1)[1].split('"', 1)[0]


async def status(config: Path) -> dict[str, Any] | None:
    """The running daemon's status document, or None while it does not answer."""
    with suppress(aiohttp.ClientError, TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(f"http://{listen(config)}/api/v1/status") as resp,
        ):
            if resp.status == 200:
                doc: dict[str, Any] = await resp.json()
                return doc
    return None


async def syncs(config: Path) -> dict[str, dict[str, Any]]:
    doc = await status(config) or {"clusters": []}
    return {f"{c['name']}/{s['name']}": s for c in doc["clusters"] for s in c["syncs"]}


async def converged(config: Path, revision: str, count: int, what: str, timeout: float = 60) -> None:
    async def check() -> bool:
        rows = (await syncs(config)).values()
        return len(rows) == count and all(r["result"] == "ready" and r["revision"] == revision for r in rows)

    await eventually(check, what, timeout=timeout)


def fleetd(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "fleetd", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def one_spoke_fleet(
    tmp_path: Path, spoke: Spoke, namespace: str, interval: str = "1h"
) -> tuple[Path, WorkRepo]:
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"v": "1"})})
    repo.commit("v1")
    config = write_fleet(tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig},
                         syncs=[{"name": "apps", "path": "apps", "interval": interval}])  # fmt: skip
    return config, repo


# -- one daemon per state directory ------------------------------------------------------------------


async def test_a_second_daemon_on_the_same_state_directory_exits_2_naming_the_first_and_reads_still_work(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    config, repo = one_spoke_fleet(tmp_path, spokes[0], namespace)
    async with daemon(config, tmp_path / "first.log") as first:
        await converged(config, repo.head(), 1, "the first daemon converged")
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetd", "run", "--config", str(config), stderr=subprocess.PIPE
        )
        async with asyncio.timeout(30):
            _, err = await second.communicate()
        assert second.returncode == 2
        assert f"another fleetd (PID {first.pid}) is already running" in err.decode()
        assert "Traceback" not in err.decode()
        assert first.returncode is None
        shown = await asyncio.to_thread(fleetd, "status", "--config", str(config))
        assert shown.returncode == 0, shown.stderr
        assert "ready" in shown.stdout
        diff = await asyncio.to_thread(fleetd, "diff", spokes[0].name, "--config", str(config))
        assert diff.returncode == 0, diff.stderr
        reload = await asyncio.to_thread(fleetd, "reload", "--config", str(config))
        assert reload.returncode == 0, reload.stderr  # the first daemon still owns its control socket
    log = (tmp_path / "first.log").read_text()
    assert "fleetd stopped" in log


# -- an unprivileged user, as the unit runs it -------------------------------------------------------------


def unprivileged_hub(spoke: Spoke, namespace: str, unreadable_db: bool) -> tuple[Path, Path, WorkRepo]:
    """A hub directory as an installation has it: inventory and kubeconfig readable by the daemon's user only,
    a state directory owned by it (empty, or holding a database that user cannot read)."""
    hub = Path(tempfile.mkdtemp(prefix="fleetd-hub-"))
    hub.chmod(0o755)
    repo = WorkRepo(hub / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"v": "1"})})
    repo.commit("v1")
    kubeconfig = hub / "etc" / "spoke.kubeconfig"
    kubeconfig.parent.mkdir()
    shutil.copy(spoke.kubeconfig, kubeconfig)
    config = write_fleet(hub / "etc", repo=repo.path, clusters={spoke.name: kubeconfig},
                         syncs=[{"name": "apps", "path": "apps"}])  # fmt: skip
    config.write_text(config.read_text().replace('interval = "1h"', 'interval = "2s"'))
    state = hub / "etc" / "state"
    state.mkdir(mode=0o700)
    if unreadable_db:
        (state / "fleetd.db").write_bytes(b"left by root, mode 0600")
        (state / "fleetd.db").chmod(0o600)
    (hub / "home").mkdir()
    for path in [hub / "etc", hub / "home", state, *(hub / "etc").rglob("*")]:
        if path.name != "fleetd.db":
            os.chown(path, NOBODY, NOBODY)
    for path in [hub / "etc", *(hub / "etc").rglob("*")]:
        if path.is_file() and path.name != "fleetd.db":
            path.chmod(0o600)
    give_to_nobody(hub / "repo")
    return hub, config, repo


def give_to_nobody(repo: Path) -> None:
    """A local repository must belong to the daemon's user (git refuses others' since safe.directory)."""
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(repo)], check=True)


def private_umask() -> None:
    os.umask(0o077)  # as the unit's UMask=0077


def modes(state: Path) -> dict[str, str]:
    return {str(p.relative_to(state)): oct(stat.S_IMODE(p.lstat().st_mode)) for p in state.rglob("*")}


def owner(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


@pytest.mark.parametrize("unreadable_db", [False, True], ids=["fresh state dir", "unreadable database"])
async def test_the_daemon_as_an_unprivileged_user_with_umask_0077_converges_and_keeps_its_files_private(
    spokes: list[Spoke], namespace: str, unreadable_db: bool
) -> None:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is missing: apt-get install util-linux")
    hub, config, repo = unprivileged_hub(spokes[0], namespace, unreadable_db)
    try:
        wrapper = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all")
        env = {"HOME": str(hub / "home")}
        async with daemon(config, hub / "daemon.log", wrapper=wrapper, env=env,
                          preexec=private_umask) as proc:  # fmt: skip
            await converged(config, repo.head(), 1, "converged as nobody")
            assert owner(proc.pid) == NOBODY
            repo.write({"apps/cm.yaml": configmap("cm", namespace, {"v": "2"})})
            second = repo.commit("v2")
            await asyncio.to_thread(give_to_nobody, hub / "repo")
            await converged(config, second, 1, "the next revision, fetched as nobody on the 2s interval")
        state = hub / "etc" / "state"
        found = modes(state)
        assert {"fleetd.db", "fleetd.lock", "git", "snapshots"} <= set(found), found
        top = {k: v for k, v in found.items() if "/" not in k}  # what others could reach, were state open
        shared = {k: v for k, v in top.items() if int(v, 8) & 0o077}
        assert not shared, f"readable by others: {shared}"
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert (state / "fleetd.db").stat().st_uid == NOBODY
        if unreadable_db:
            assert any(k.startswith("fleetd.db.corrupt-") for k in found), found
        log = (hub / "daemon.log").read_text()
        assert "Permission denied" not in log, log[-2000:]
    finally:
        shutil.rmtree(hub, ignore_errors=True)


# -- a wall clock that jumps -------------------------------------------------------------------------------


async def test_a_clock_jumped_back_an_hour_and_forward_two_keeps_interval_reconciles_and_fetches_on_time(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} is missing: apt-get install faketime (make system-deps)")
    config, repo = one_spoke_fleet(tmp_path, spokes[0], namespace, interval="2s")
    config.write_text(config.read_text().replace('interval = "1h"', 'interval = "2s"'))  # the source's
    offset = tmp_path / "faketime.rc"
    offset.write_text("+0\n")
    env = {  # the offset file is re-read every second; the monotonic clock and file times stay real
        "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "NO_FAKE_STAT": "1",
    }  # fmt: skip
    async with daemon(config, tmp_path / "daemon.log", env=env):
        await converged(config, repo.head(), 1, "converged before the jump")
        for jump, shift in (("-3600", -3600.0), ("+3600", 3600.0)):
            offset.write_text(f"{jump}\n")
            await _attempts_keep_their_pace(config, shift)
            repo.write({"apps/cm.yaml": configmap("cm", namespace, {"v": jump})})
            revision = repo.commit(f"pushed after a {jump}s jump; fetched on the 2s source interval")
            await converged(config, revision, 1, f"the interval fetch after a {jump}s jump", timeout=20)


async def _attempts_keep_their_pace(config: Path, shift: float) -> None:
    """The displayed times move by ``shift``; the interval passes (each stamps attempted_at) keep pace."""

    async def attempted_at() -> float:
        rows = list((await syncs(config)).values())
        return float(rows[0]["attempted_at"] or 0) if rows else 0.0

    async def shifted() -> bool:
        return abs(await attempted_at() - (time.time() + shift)) < 30

    await eventually(shifted, f"a pass stamped with the clock moved by {shift:+.0f}s", timeout=20)
    seen = [await attempted_at()]
    started = time.monotonic()

    async def three_more() -> bool:
        now = await attempted_at()
        if now != seen[-1]:
            seen.append(now)
        return len(seen) > 3

    await eventually(three_more, "interval passes continuing after the jump", timeout=30)
    elapsed = time.monotonic() - started
    assert elapsed < 3 * 2 + 5, f"3 passes of a 2s interval took {elapsed:.1f}s"
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert all(0 < g < 10 for g in gaps), json.dumps(gaps)

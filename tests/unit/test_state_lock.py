"""One daemon per state directory: the flock is exclusive, names its holder, and dies with it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetd.daemon.lock import LOCK_NAME, LockError, StateLock

pytestmark = pytest.mark.timeout(30)

HOLD = """
import sys, time
from pathlib import Path
from fleetd.daemon.lock import StateLock
lock = StateLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_lock_on_the_same_state_directory_is_refused_naming_the_holders_pid(tmp_path: Path) -> None:
    with StateLock.acquire(tmp_path), pytest.raises(LockError) as refused:
        StateLock.acquire(tmp_path)
    assert f"another fleetd (PID {os.getpid()}) is already running" in str(refused.value)
    assert str(tmp_path) in str(refused.value)


def test_a_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    StateLock.acquire(tmp_path).release()
    with StateLock.acquire(tmp_path) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_a_missing_state_directory_is_created_private_with_a_private_lock_file(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    with StateLock.acquire(state):
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / LOCK_NAME).stat().st_mode) == 0o600


def test_the_lock_dies_with_a_holder_killed_by_sigkill(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=f"PID {holder.pid}"):
            StateLock.acquire(tmp_path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 5
        while True:  # the kernel drops the lock as the process goes: no stale lock to clean up
            try:
                StateLock.acquire(tmp_path).release()
                break
            except LockError:
                assert time.monotonic() < deadline, "the lock outlived its holder"
                time.sleep(0.05)
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_lock_path_that_is_not_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / LOCK_NAME)
    with pytest.raises(LockError, match="is not a regular file; remove it"):
        StateLock.acquire(tmp_path)


def test_a_lock_file_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / LOCK_NAME).symlink_to(target)
    with pytest.raises(LockError, match="cannot open the lock file"):
        StateLock.acquire(tmp_path / "state")
    assert not target.exists()

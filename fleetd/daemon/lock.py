"""One daemon per state directory: an exclusive ``flock`` on ``<state_dir>/fleetd.lock``.

Two daemons on one state directory would take each other's control socket
and reconcile the same clusters at the same time. So ``fleetd run`` takes
this lock before it opens anything in the state directory (the database,
the git mirror, the socket) and holds it for as long as the process lives:

* the lock is ``flock(LOCK_EX | LOCK_NB)`` on an open file: a second daemon
  gets `LockError` at once, naming the first one's PID (which the holder
  writes into the file) — ``fleetd run`` exits 2 with that message;
* the kernel releases it when the process ends, however it ends (SIGKILL, a
  crash, the OOM killer): there is never a stale lock to clean up, so the
  file itself is left in place (removing it would let a third daemon lock a
  new file while the second still holds the old one);
* the descriptor is not inherited (``O_CLOEXEC``): a credential plugin or a
  kustomize left running cannot keep the lock after fleetd is gone.

Commands that only read (``fleetd status``, ``check``, ``diff``) never take
it, so they keep working next to a running daemon.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from types import TracebackType

from fleetd.errors import FleetdError

LOCK_NAME = "fleetd.lock"


class LockError(FleetdError):
    """Another daemon holds the state directory, or its lock file cannot be opened."""


class StateLock:
    """The held lock of one state directory; see the module docstring. Release with `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take the lock of ``state_dir`` (created ``0700`` if missing) or raise `LockError`."""
        path = state_dir / LOCK_NAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise LockError(
                f"cannot open the lock file {path}: {exc.strerror or exc}; "
                "the state directory must be writable by fleetd's user"
            ) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LockError(f"{path} is not a regular file; remove it so fleetd can lock the state directory")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockError(f"cannot lock {path}: {exc.strerror or exc}") from exc
            raise LockError(
                f"another fleetd ({holder(path)}) is already running with the state directory "
                f"{state_dir}; stop it first, or give this inventory its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Let the next daemon in (closing the descriptor releases the lock)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holder(path: Path) -> str:
    """``PID 1234`` of the process that wrote ``path`` last, for messages (best effort)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"

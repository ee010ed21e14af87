"""Private working directories for kustomize builds with SOPS-encrypted inputs.

kustomize reads a directory tree, so decrypted inputs must exist as files
while it runs (``memfd`` cannot hold a tree). They are written where a crash
cannot leave them on disk, and where nobody else can read them:

1. **Where.** The first usable of: ``$XDG_RUNTIME_DIR`` (per user, mode 0700,
   a tmpfs under systemd), ``/dev/shm`` (a tmpfs on Linux), the temporary
   directory (``$TMPDIR``, per user on macOS). tmpfs is memory: a power loss
   or reboot erases it.
2. **How.** Each build gets ``fleetd-kustomize-<pid>.<start>-<random>`` made by
   ``mkdtemp`` (mode 0700; the name records the owning process and its start
   time). The kustomization directories of the graph are copied into it at
   their paths relative to the repository root (so ``../base`` resolves;
   symbolic links stay links, never followed), and each encrypted file is
   replaced there by its plaintext (mode 0600), from the caller's
   ``decrypt`` hook. The directory is removed in a ``finally`` after
   success, failure, timeout or cancellation; a copying thread that outlives
   a cancelled build removes it itself.
3. **After a crash** (``kill -9`` mid-build), `sweep_stale_workdirs`, called
   by the daemon at start, removes every such directory whose owner process
   no longer runs. kustomize itself dies with the daemon
   (`fleetd.util.children`).

The copy also reports what decryption produced (`PrivateTree.decrypted`),
so the renderer can keep decrypted values out of variable substitution and
tell encrypted Secrets from plaintext ones, and the plaintext's words
(`PrivateTree.tokens`) to redact from kustomize's messages.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fleetd.errors import FleetdError
from fleetd.render.errors import KustomizeError
from fleetd.render.model import Decrypt
from fleetd.render.plaintext import decrypted_texts
from fleetd.secrets.scan import failure_text, plaintext_tokens
from fleetd.secrets.sops import Format

log = logging.getLogger(__name__)

PREFIX = "fleetd-kustomize-"
_NAME = re.compile(rf"^{PREFIX}(\d+)\.(\w+)-")
_UNKNOWN_START = "x"
"""The start token where the platform cannot tell a process's start time."""


@dataclass(frozen=True, slots=True)
class Input:
    """A SOPS-encrypted file a build reads."""

    where: str
    """Relative to the repository root: for messages and for its place in the private copy."""
    fmt: Format
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PrivateTree:
    """The private copy of a kustomization graph with its inputs decrypted."""

    target: Path
    """The directory to build (inside the copy)."""
    tokens: frozenset[str] = field(repr=False)
    """Words of the plaintext, to redact from messages."""
    decrypted: frozenset[str] = field(repr=False)
    """What decryption produced: every decrypted value and file text."""


def work_bases() -> list[Path]:
    """Where private directories may go, best first (see the module docstring)."""
    bases = []
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_absolute() and _private_directory(Path(runtime)):
        bases.append(Path(runtime))
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs on purpose; entries are made with mkdtemp (0700)
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        bases.append(shm)
    bases.append(Path(tempfile.gettempdir()))
    return bases


def _private_directory(path: Path) -> bool:
    try:
        info = path.stat()
    except OSError:
        return False
    return path.is_dir() and info.st_uid == os.geteuid() and info.st_mode & 0o077 == 0


def make_workdir() -> Path:
    """A new private (0700) directory in the first usable base; KustomizeError if none is."""
    prefix = f"{PREFIX}{os.getpid()}.{_start_token(os.getpid()) or _UNKNOWN_START}-"
    problems = []
    for base in work_bases():
        try:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        except OSError as e:
            problems.append(f"{base}: {e.strerror}")
    raise KustomizeError(
        None, f"cannot create a private working directory ({'; '.join(problems)})", temporary=True
    )


def remove_workdir(path: Path) -> None:
    """Delete a working directory; a copying thread racing us removes what it still writes."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.debug("private kustomize copy %s not yet fully removed; its copying thread will", path)


def sweep_stale_workdirs() -> list[Path]:
    """Remove the working directories of fleetd processes that no longer run; returns them.

    Call it when the daemon starts: a ``kill -9`` during a build leaves its
    directory (with decrypted files) behind. Directories of running
    processes, this one included, and of other users are left alone.
    """
    removed = []
    for base in work_bases():
        try:
            entries = list(base.iterdir())
        except OSError:
            continue
        for entry in entries:
            if _stale(entry):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
                log.info("removed %s, left behind by a fleetd process that no longer runs", entry)
    return removed


def _stale(entry: Path) -> bool:
    match = _NAME.match(entry.name)
    if match is None:
        return False
    try:
        info = entry.lstat()
    except OSError:
        return False
    if info.st_uid != os.geteuid() or not entry.is_dir() or entry.is_symlink():
        return False
    pid, started = int(match.group(1)), match.group(2)
    return not _running(pid, started)


def _running(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process of that number: it may be the owner
    return started == _UNKNOWN_START or _start_token(pid) in (started, None)


def _start_token(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), telling a reused pid apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


# --- the private copy -------------------------------------------------------------------------


def private_copy(
    *,
    root: Path,
    directories: tuple[Path, ...],
    inputs: tuple[Input, ...],
    built: str,
    scratch: Path,
    decrypt: Decrypt,
    abandoned: threading.Event,
) -> PrivateTree:
    """Copy the graph's `directories` into ``scratch/tree`` and decrypt `inputs` there (a worker thread).

    `built` is the directory to build, relative to `root`. When the caller
    gave up meanwhile (`abandoned`), deletes `scratch` itself.
    """
    tree, tokens, decrypted = scratch / "tree", set[str](), set[str]()
    try:
        for directory in _outermost(directories):
            _copy_directory(directory, tree / directory.relative_to(root), abandoned)
        for item in inputs:
            if abandoned.is_set():
                break
            plain = _plaintext(item, decrypt)
            _write_private(tree / item.where, plain)
            tokens |= plaintext_tokens(plain, item.data)
            decrypted |= decrypted_texts(item.fmt, item.data, plain)
    except OSError as e:
        raise KustomizeError(
            built, f"cannot write the private copy for decrypted inputs: {e.strerror}", temporary=True
        ) from None
    finally:
        if abandoned.is_set():
            remove_workdir(scratch)
    return PrivateTree(target=tree / built, tokens=frozenset(tokens), decrypted=frozenset(decrypted))


def _plaintext(item: Input, decrypt: Decrypt) -> bytes:
    try:
        return decrypt(item.data, item.fmt)
    except FleetdError as e:
        raise KustomizeError(item.where, f"cannot decrypt: {failure_text(e)}") from e


def _outermost(directories: Iterable[Path]) -> list[Path]:
    """`directories` without those inside another of them (copying the outer one copies them)."""
    kept: list[Path] = []
    for directory in sorted(directories, key=lambda d: len(d.parts)):
        if not any(directory.is_relative_to(outer) for outer in kept):
            kept.append(directory)
    return kept


def _copy_directory(source: Path, target: Path, abandoned: threading.Event) -> None:
    """Copy regular files and directories; symbolic links stay links (never followed)."""
    for current, dirs, files in os.walk(source):
        if abandoned.is_set():
            return
        here = target / Path(current).relative_to(source)
        here.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in [*dirs, *files]:
            entry = Path(current, name)
            if entry.is_symlink():
                (here / name).symlink_to(entry.readlink())
            elif name in files and entry.is_file():
                shutil.copyfile(entry, here / name)


def _write_private(path: Path, data: bytes) -> None:
    """Replace the copy (or link) at `path` by a new file only the owner can read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)

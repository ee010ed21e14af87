"""Snapshots: one read-only directory per revision, written once, never changed.

Layout: ``<state>/snapshots/<commit-sha>/`` holds that commit's tree. A
snapshot is written from the tree's entries into a temporary directory
(``.tmp-*``) and renamed into place, so a directory named after a commit is
always complete; its files are ``0444`` (``0555`` when executable) and its
directories ``0555``. Names that could escape or confuse (``..``, ``.git``,
``/``) are refused; symlinks that resolve outside the snapshot are dropped
(a repository must not make fleetd read /etc); submodules are not fetched.

Modes are explicit: every directory and file here gets its mode from a
``chmod`` after creation, so the process umask (systemd's ``UMask=0077``, a
shell's 022) changes nothing. The snapshots directory itself is ``0700``.

`SnapshotStore.prune` deletes every snapshot not in a keep-set (the
fetcher keeps the current, the previous and the pinned revisions) and any
temporary directory a crash left behind. `disk_bytes` measures what a tree
takes on disk, for the metrics.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Set
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
READ_ONLY_DIR = 0o555
READ_ONLY_FILE = 0o444
EXECUTABLE_FILE = 0o555
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One revision of the repository, materialised read-only on disk."""

    revision: str
    """Full commit id (40 hex digits)."""
    ref: str
    """How it was chosen: "branch main", "tag v1.2.0", "semver ^1 -> v1.4.2", "commit abc1234"."""
    root: Path
    """Read-only directory holding the commit's tree; never changes."""
    message: str
    """First line of the commit message."""


class EntryKind(enum.Enum):
    """What one tree entry becomes on disk."""

    DIRECTORY = "directory"
    FILE = "file"
    EXECUTABLE = "executable"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a commit's tree, parents before children; `data` is the content or link target."""

    path: tuple[str, ...]
    kind: EntryKind
    data: bytes = b""


def make_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed and make it ``0700``, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR)
    return path


class SnapshotStore:
    """The snapshots directory of one state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, revision: str) -> Path:
        return self.root / revision

    def materialise(self, revision: str, entries: Iterable[Entry]) -> Path:
        """The snapshot directory of `revision`, written from `entries` now unless it exists."""
        final = self.path(revision)
        if final.is_dir():
            return final
        make_private_dir(self.root)
        work = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{revision[:12]}-", dir=self.root))
        try:
            for entry in entries:
                _write(work, entry)
            _drop_escaping_links(work)
            _make_read_only(work)
            work.rename(final)
        except BaseException:
            remove_tree(work)
            raise
        return final

    def prune(self, keep: Set[str]) -> list[str]:
        """Remove snapshots whose revision is not in `keep`, and leftover temporary directories."""
        if not self.root.is_dir():
            return []
        removed = []
        for path in sorted(self.root.iterdir()):
            if path.name not in keep:
                remove_tree(path)
                removed.append(path.name)
        return removed

    def revisions(self) -> list[str]:
        """The complete snapshots present."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(_TEMP_PREFIX))


def _write(into: Path, entry: Entry) -> None:
    name = entry.path[-1] if entry.path else ""
    if name in {"", ".", "..", ".git"} or "/" in name or "\0" in name:
        raise ValueError(f"the tree holds an unsafe path {'/'.join(entry.path)!r}")
    path = into.joinpath(*entry.path)
    if entry.kind is EntryKind.DIRECTORY:
        path.mkdir()
        path.chmod(PRIVATE_DIR)
    elif entry.kind is EntryKind.SYMLINK:
        path.symlink_to(os.fsdecode(entry.data))
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(entry.data)
            os.fchmod(
                file.fileno(), EXECUTABLE_FILE if entry.kind is EntryKind.EXECUTABLE else READ_ONLY_FILE
            )


def _drop_escaping_links(root: Path) -> None:
    """Remove symlinks that resolve outside `root` (a repository must not read /etc/...) or loop."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            link = Path(dirpath, name)
            if not link.is_symlink():
                continue
            try:
                inside = link.resolve().is_relative_to(real_root)
            except (RuntimeError, OSError):  # a loop (Python 3.11 raises RuntimeError for those)
                _log.warning("git source: symlink %s loops; not written", link.relative_to(root))
                link.unlink()
                continue
            if not inside:
                _log.warning(
                    "git source: symlink %s leaves the repository; not written", link.relative_to(root)
                )
                link.unlink()


def _make_read_only(root: Path) -> None:
    for dirpath, _, _ in os.walk(root, topdown=False):
        Path(dirpath).chmod(READ_ONLY_DIR)


def remove_tree(path: Path) -> None:
    """Delete a snapshot directory, read-only as it is."""
    for dirpath, _, _ in os.walk(path):
        Path(dirpath).chmod(PRIVATE_DIR)
    shutil.rmtree(path, ignore_errors=True)


def disk_bytes(path: Path) -> int:
    """Bytes the files under `path` take on disk (allocated blocks, like ``du``); 0 if absent."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                total += Path(dirpath, name).lstat().st_blocks * 512
            except OSError:
                continue  # removed while walking
    return total

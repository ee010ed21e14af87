"""The files of a sync path: where the directory is, which files are manifests, reading them safely.

A sync names a directory of the repository snapshot. `sync_directory`
resolves it (relative, no ``..``, not out of the repository through a
symbolic link, not a symbolic link loop) and finds its kustomization.

Which files count (plain directories)
    The directory is walked recursively, in sorted order (so output and
    errors are deterministic). A symbolic link to a directory is an error, not
    followed and not skipped: skipped, its objects would be missing from the
    render and so pruned; followed, a link to itself would never end. Files ending
    in ``.yaml``, ``.yml`` or ``.json`` are manifests; any other file (README.md,
    scripts) is ignored, as is anything whose name starts with a dot
    (``.sops.yaml``, ``.github/``) and files named ``kustomization.yaml``,
    ``kustomization.yml`` or ``Kustomization``.

Reading a manifest (`read_manifest`) never blocks and never reads without bound
    A symbolic link must resolve inside the repository to an existing file;
    a link loop, a dangling link, a FIFO, socket or device, an unreadable file
    and a file over `MAX_FILE_BYTES` are each a `RenderError` naming the file
    and what to do. The file is opened without blocking (a FIFO cannot hang
    the reader) and checked on the open descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fleetd.render.errors import RenderError
from fleetd.render.kustomization import KUSTOMIZATION_FILES, kustomization_file

MiB = 1024 * 1024
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 64 * MiB
"""Largest manifest file fleetd reads."""
MAX_SYNC_BYTES = 256 * MiB
"""Most manifest bytes one plain sync directory may hold in total."""
_READ_CHUNK = 1 * MiB
_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


@dataclass(frozen=True, slots=True)
class SyncDirectory:
    """A sync path, resolved and checked."""

    root: Path
    """The repository snapshot, resolved."""
    directory: Path
    """The sync directory, resolved, inside `root`."""
    kustomization: Path | None
    """Its kustomization file, or None for a plain directory."""

    def where(self, path: Path) -> str:
        """`path` relative to the repository root, for messages."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


def sync_directory(root: Path, revision: str, path: PurePosixPath) -> SyncDirectory:
    """The checked directory of sync path `path` in snapshot `root`; RenderError if unusable."""
    if path.is_absolute() or ".." in path.parts:
        raise RenderError(f"sync path {path} must be relative to the repository root, without '..'")
    resolved_root = _resolve(root, f"the repository snapshot {root}")
    directory = _resolve(resolved_root / path, f"sync path {path}")
    if not directory.is_relative_to(resolved_root):
        raise RenderError(f"sync path {path} leads out of the repository through a symbolic link")
    if not directory.is_dir():
        raise RenderError(
            f"sync path {path} is not a directory at revision {revision[:12]} — "
            "check the sync's path and that the change is pushed"
        )
    return SyncDirectory(resolved_root, directory, kustomization_file(directory))


def _resolve(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except RuntimeError:  # Python 3.11 reports symbolic link loops so
        raise RenderError(f"{what} is a symbolic link loop; fix the links in the repository") from None
    except OSError as e:
        raise RenderError(f"{what} cannot be resolved: {e.strerror}") from None


def manifest_files(place: SyncDirectory) -> Iterator[Path]:
    """Manifest files under the sync directory, depth first, sorted; see the module docstring."""
    for current, dirs, files in os.walk(place.directory, onerror=_walk_error(place)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in dirs:
            if Path(current, name).is_symlink():
                raise RenderError(
                    "is a symbolic link to a directory, which fleetd does not follow in a plain sync path "
                    "(its objects would silently be missing); replace the link by the directory, or use a "
                    "kustomization that names it",
                    file=place.where(Path(current, name)),
                )
        for name in sorted(files):
            if is_manifest_name(name):
                yield Path(current, name)


def _walk_error(place: SyncDirectory) -> Callable[[OSError], None]:
    def raise_error(error: OSError) -> None:
        where = place.where(Path(error.filename)) if error.filename else place.where(place.directory)
        raise RenderError(f"cannot read the directory: {error.strerror}", file=where)

    return raise_error


def is_manifest_name(name: str) -> bool:
    """Whether a file called `name` is read as a manifest in a plain directory."""
    skipped = name.startswith(".") or name in KUSTOMIZATION_FILES
    return not skipped and name.lower().endswith(MANIFEST_SUFFIXES)


def read_manifest(place: SyncDirectory, file: Path, *, remaining: int = MAX_SYNC_BYTES) -> bytes:
    """The bytes of manifest `file`, checked as the module docstring says; RenderError if unreadable.

    `remaining` is what is left of the sync's `MAX_SYNC_BYTES` budget.
    """
    where = place.where(file)
    if file.is_symlink():
        _check_link(place, file, where)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise RenderError(
            f"cannot open: {e.strerror}; make it a regular file fleetd's user can read", file=where
        ) from None
    try:
        return _read_regular(fd, where, min(MAX_FILE_BYTES, remaining), remaining < MAX_FILE_BYTES)
    finally:
        os.close(fd)


def _check_link(place: SyncDirectory, file: Path, where: str) -> None:
    try:
        target = file.resolve(strict=True)
    except RuntimeError:
        raise RenderError("is a symbolic link loop; fix or remove the link", file=where) from None
    except FileNotFoundError:
        raise RenderError(
            f"is a symbolic link to {str(file.readlink())!r}, which does not exist; fix or remove the link",
            file=where,
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RenderError("is a symbolic link loop; fix or remove the link", file=where) from None
        raise RenderError(f"cannot follow the symbolic link: {e.strerror}", file=where) from None
    if not target.is_relative_to(place.root):
        raise RenderError("symbolic link to outside the repository", file=where)


def _read_regular(fd: int, where: str, limit: int, budget: bool) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise RenderError(f"is {kind}, not a regular file; remove it from the sync path", file=where)
    if info.st_size > limit:
        raise RenderError(_too_large(info.st_size, budget), file=where)
    chunks, size = [], 0
    try:
        while chunk := os.read(fd, _READ_CHUNK):
            size += len(chunk)
            if size > limit:  # it grew while we read it
                raise RenderError(_too_large(size, budget), file=where)
            chunks.append(chunk)
    except OSError as e:
        raise RenderError(f"cannot read: {e.strerror}", file=where) from None
    return b"".join(chunks)


def _too_large(size: int, budget: bool) -> str:
    if budget:
        return (
            f"is {_size(size)}, which takes the sync path's manifests over the {_size(MAX_SYNC_BYTES)} "
            "fleetd reads for one sync; split the directory into several syncs"
        )
    return (
        f"is {_size(size)}, more than the {_size(MAX_FILE_BYTES)} fleetd reads from one file; "
        "split it into several files"
    )


def _size(count: int) -> str:
    return f"{count / MiB:.1f} MiB" if count >= MiB else f"{count} bytes"

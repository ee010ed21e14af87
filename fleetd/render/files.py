"""The files of a sync path: where the directory is, which files are manifests, reading them safely.

A sync names a directory of the repository snapshot. `sync_directory`
resolves it (relative, no ``..``, not out of the repository through a
symbolic link, not a symbolic link loop) and finds its kustomization.

Which files count (plain directories)
    The directory is walked recursively, in sorted order (so output and
    errors are deterministic), without following symbolic links to
    directories (so a directory linked to itself is walked once). Files ending
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


def read_manifest(place: SyncDirectory, file: Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of manifest `file`, checked as the module docstring says; RenderError if unreadable."""
    where = place.where(file)
    if file.is_symlink():
        _check_link(place, file, where)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise RenderError(f"cannot open: {e.strerror}; check the file's permissions", file=where) from None
    try:
        return _read_regular(fd, where, limit)
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


def _read_regular(fd: int, where: str, limit: int) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise RenderError(f"is {kind}, not a regular file; remove it from the sync path", file=where)
    if info.st_size > limit:
        raise RenderError(too_large(info.st_size, limit), file=where)
    chunks, size = [], 0
    try:
        while chunk := os.read(fd, _READ_CHUNK):
            size += len(chunk)
            if size > limit:  # it grew while we read it
                raise RenderError(too_large(size, limit), file=where)
            chunks.append(chunk)
    except OSError as e:
        raise RenderError(f"cannot read: {e.strerror}", file=where) from None
    return b"".join(chunks)


def too_large(size: int, limit: int) -> str:
    """The message for a file of `size` bytes over `limit`."""
    return (
        f"is {size / MiB:.1f} MiB, more than the {limit / MiB:.0f} MiB fleetd reads from one file; "
        "split it into several files"
    )

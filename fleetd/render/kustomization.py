"""Kustomizations as data: which directories and files a build reads, and which references are refused.

kustomize's load restrictor confines files to each kustomization's root,
but lets a ``resources`` directory point anywhere, and fetches remote bases
over the network. Before any build, fleetd reads the kustomization graph
itself and refuses:

- remote references (``https://``, ``git@``, ``github.com/...?ref=``), with a
  message saying to vendor them;
- references that leave the repository (``../../..`` or a symbolic link out
  of it), and symbolic link loops.

The same walk tells `fleetd.render.workdir` which files a build reads (to
find SOPS-encrypted inputs) and ``fleetd check`` which files a sync uses.
Kustomizations are read through `fleetd.util.yamldoc` (bounded); one that
does not parse is left for kustomize to report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetd.render.errors import KustomizeError
from fleetd.util import yamldoc

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_KUSTOMIZATION_BYTES = 1024 * 1024
"""A larger kustomization file is left for kustomize to read (and is never that large)."""

# Fields whose entries may name another kustomization (directory) or file.
_ENTRY_FIELDS = (
    "resources",
    "bases",
    "components",
    "crds",
    "configurations",
    "generators",
    "transformers",
    "validators",
    "patchesStrategicMerge",
)
_DIRECTORY_FIELDS = frozenset({"resources", "bases", "components"})
_PATH_FIELDS = ("patches", "patchesJson6902", "replacements")
_GENERATOR_FIELDS = ("configMapGenerator", "secretGenerator")
_REMOTE_PREFIXES = ("git@", "git::", "github.com/", "gitlab.com/", "bitbucket.org/")
_REMOTE_MARKERS = ("://", "?ref=", "?version=", "?timeout=", "?submodules=")


def kustomization_file(directory: Path) -> Path | None:
    """The kustomization file of `directory`, or None when it is a plain directory."""
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class Graph:
    """What one build reads: its kustomization directories and the local files they name."""

    directories: tuple[Path, ...]
    """Every kustomization directory of the graph, resolved, the built one first."""
    files: tuple[Path, ...]
    """Every existing file an entry names (resources, patches, generator inputs, …), as kustomize
    opens it: under its kustomization's directory, symbolic links not resolved."""


def check_references(directory: Path, root: Path) -> None:
    """Refuse remote references and references leaving `root`, in the whole kustomization graph.

    `directory` holds a kustomization; `root` is the repository root (resolved).
    """
    kustomization_graph(directory, root, strict=True)


def kustomization_graph(directory: Path, root: Path, *, strict: bool = True) -> Graph:
    """The kustomizations and files a build of `directory` reads (see `check_references`).

    With ``strict=False`` remote references and references leaving `root` are
    skipped instead of refused (for callers that only look, like ``fleetd check``).
    """
    pending, seen, files = [_resolved(directory, root)], dict[Path, None](), dict[Path, None]()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen[current] = None
        for field, target, opened in _referenced(current, root, strict):
            if field in _DIRECTORY_FIELDS and target.is_dir():
                pending.append(target)
            elif target.is_file():
                files[opened] = None
    return Graph(directories=tuple(seen), files=tuple(files))


def _resolved(path: Path, root: Path, where: str | None = None, entry: str = "") -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # 3.11 reports a symbolic link loop as RuntimeError
        name = where or os.path.relpath(path, root)
        detail = f"entry {entry!r} " if entry else ""
        raise KustomizeError(
            name, f"{detail}is a symbolic link loop; fix the links in the repository"
        ) from None


def _referenced(directory: Path, root: Path, strict: bool) -> Iterator[tuple[str, Path, Path]]:
    """(field, resolved target, path as opened) of every local entry of `directory`'s kustomization."""
    kfile = kustomization_file(directory)
    content = _read_kustomization(kfile) if kfile else None
    if kfile is None or content is None:
        return
    where = kfile.relative_to(root).as_posix()
    for field, reference in _references(content):
        try:
            target = _check_reference(where, field, reference, directory, root)
        except KustomizeError:
            if strict:
                raise
            continue
        opened = Path(os.path.normpath(directory / _local(field, reference)))
        if opened.is_relative_to(root):
            yield field, target, opened


def _read_kustomization(kfile: Path) -> dict[str, Any] | None:
    try:
        if kfile.stat().st_size > MAX_KUSTOMIZATION_BYTES:
            return None
        content = yamldoc.first_plain(kfile.read_bytes())
    except (OSError, yamldoc.DocumentError):
        return None
    return content if isinstance(content, dict) else None


def _references(content: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, reference) for every entry of `content` that names a file, directory or URL."""
    for field in _ENTRY_FIELDS:
        for entry in _as_list(content.get(field)):
            if isinstance(entry, str) and "\n" not in entry:  # multi-line entries are inline YAML
                yield field, entry
    for field in _PATH_FIELDS:
        for entry in _as_list(content.get(field)):
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                yield field, entry["path"]
    for field in _GENERATOR_FIELDS:
        for generator in _as_list(content.get(field)):
            if isinstance(generator, dict):
                sources = [*_as_list(generator.get("files")), *_as_list(generator.get("envs"))]
                sources.append(generator.get("env"))
                yield from ((field, s) for s in sources if isinstance(s, str))
    openapi = content.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        yield "openapi", openapi["path"]


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_reference(where: str, field: str, reference: str, directory: Path, root: Path) -> Path:
    """The local target of `reference`; KustomizeError if it is remote or outside `root`."""
    if is_remote(reference):
        raise KustomizeError(
            where,
            f"{field} entry {reference!r} is a remote reference; fleetd renders without network "
            "access — vendor it into the repository and refer to it by a relative path",
        )
    local = _local(field, reference)
    target = _resolved(directory / local, root, where, reference)
    if Path(local).is_absolute() or not target.is_relative_to(root):
        raise KustomizeError(
            where,
            f"{field} entry {reference!r} points outside the repository; "
            "refer only to files and directories of the same repository",
        )
    return target


def _local(field: str, reference: str) -> str:
    """The path of an entry: a generator's ``key=path`` names its file after the ``=``."""
    return reference.split("=", 1)[-1] if field in _GENERATOR_FIELDS else reference


def is_remote(reference: str) -> bool:
    """Whether a kustomization entry names something kustomize would fetch over the network."""
    return reference.startswith(_REMOTE_PREFIXES) or any(m in reference for m in _REMOTE_MARKERS)

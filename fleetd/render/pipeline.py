"""Render: turn one directory of one git revision into Kubernetes objects.

Rendering happens in two steps, so the expensive one is shared by every
cluster:

1. `load` — per (revision, path): read the manifests (`fleetd.render.files`)
   or build the kustomization (`fleetd.render.kustomize`), parse them
   (`fleetd.render.parse`), decrypt SOPS data (`fleetd.render.decrypt`),
   check that every document is an object (`fleetd.render.objects`). The
   result, `Loaded`, does not depend on the cluster.
2. `finish` — per (variables, namespace): substitute variables
   (`fleetd.render.variables`), give namespaced objects the target
   namespace and refuse duplicates (`fleetd.render.scope`), list plaintext
   Secrets (`fleetd.render.plaintext`). Pure.

`render` does both; `fleetd.render.cache.RenderCache` remembers both levels.
A directory with no manifests renders to no objects.

Off the event loop: reading, parsing, decrypting and finishing run in worker
threads (`asyncio.to_thread`), each step per document, so the event loop
gets the interpreter every few milliseconds even while a 50 MB manifest
renders; kustomize runs as a child process. Anything wrong with the input is
a `RenderError`; nothing else escapes for bad input.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from fleetd.render import files
from fleetd.render.decrypt import file_sources, output_sources
from fleetd.render.errors import KustomizeError, RenderError
from fleetd.render.files import SyncDirectory, manifest_files, read_manifest, sync_directory
from fleetd.render.kustomization import kustomization_graph
from fleetd.render.kustomize import DEFAULT_TIMEOUT
from fleetd.render.kustomize import build as kustomize_build
from fleetd.render.model import ClusterScoped, Decrypt, Loaded, Rendered, RenderResult
from fleetd.render.objects import file_locator, objects
from fleetd.render.parse import syntax_of
from fleetd.render.plaintext import plaintext_secrets, refuse
from fleetd.render.scope import check_duplicates, default_namespace, scope_predicate
from fleetd.render.variables import substituted
from fleetd.util.heap import Settler

_RELEASE_STEP = 500


async def render(
    root: Path,
    revision: str,
    path: PurePosixPath,
    variables: Mapping[str, str],
    namespace: str | None,
    *,
    kustomize: str | Path | None = None,
    kustomize_timeout: float = DEFAULT_TIMEOUT,
    cluster_scoped: ClusterScoped | None = None,
    decrypt: Decrypt | None = None,
    require_encrypted_secrets: bool = False,
) -> RenderResult:
    """Render `path` of the snapshot `root` (at `revision`) for one cluster; RenderError if it cannot.

    With `require_encrypted_secrets`, a plaintext Secret fails the render.
    """
    loaded = [
        await load(
            root, revision, path, kustomize=kustomize, kustomize_timeout=kustomize_timeout, decrypt=decrypt
        )
    ]
    # finish in a thread that also lets go of the loaded objects (freeing millions of them takes time)
    result = await asyncio.to_thread(_finish_last, loaded, variables, namespace, cluster_scoped)
    if require_encrypted_secrets:
        refuse(result.plaintext_secrets)
    return result


async def load(
    root: Path,
    revision: str,
    path: PurePosixPath,
    *,
    kustomize: str | Path | None = None,
    kustomize_timeout: float = DEFAULT_TIMEOUT,
    decrypt: Decrypt | None = None,
) -> Loaded:
    """Read, build and decrypt the objects of `path`; the cluster-independent half of `render`."""
    place = await asyncio.to_thread(sync_directory, root, revision, path)
    if place.kustomization is None:
        documents = await asyncio.to_thread(_plain_objects, place, decrypt)
    else:
        documents = await _built_objects(place, place.kustomization, kustomize, kustomize_timeout, decrypt)
    return Loaded(revision=revision, path=path, documents=documents)


def finish(
    loaded: Loaded,
    variables: Mapping[str, str],
    namespace: str | None,
    *,
    cluster_scoped: ClusterScoped | None = None,
) -> RenderResult:
    """Substitute `variables`, default the namespace, refuse duplicates; never mutates `loaded`."""
    settler = Settler()
    objects = tuple(substituted(doc, variables, settler) for doc in loaded.documents)
    if namespace:
        scoped = scope_predicate(objects, cluster_scoped)
        for rendered in objects:
            default_namespace(rendered.obj, namespace, scoped)
    check_duplicates(objects)
    return RenderResult(
        revision=loaded.revision,
        path=loaded.path,
        objects=objects,
        digest=_digest(objects),
        plaintext_secrets=plaintext_secrets(objects),
    )


def _finish_last(
    box: list[Loaded],
    variables: Mapping[str, str],
    namespace: str | None,
    cluster_scoped: ClusterScoped | None,
) -> RenderResult:
    """`finish` the only reference to a `Loaded` (in `box`), then free it in steps (a worker thread)."""
    loaded = box.pop()
    result = finish(loaded, variables, namespace, cluster_scoped=cluster_scoped)
    documents = list(loaded.documents)
    del loaded
    release(documents)
    return result


def release(items: list[Any]) -> None:
    """Drop `items` a slice at a time, so freeing a large result never holds the interpreter for long."""
    while items:
        del items[-_RELEASE_STEP:]


def sync_files(root: Path, revision: str, path: PurePosixPath) -> list[Path]:
    """Every file that rendering `path` reads: its manifests, or the files its kustomizations name.

    For ``fleetd check``, which looks for encrypted files: kustomize references
    that rendering would refuse (remote, outside the repository) are skipped,
    not errors. RenderError when the sync path itself is unusable.
    """
    place = sync_directory(root, revision, path)
    if place.kustomization is None:
        return list(manifest_files(place))
    try:
        return list(kustomization_graph(place.directory, place.root, strict=False).files)
    except KustomizeError as e:
        raise RenderError(e.detail, file=e.directory) from None


def _plain_objects(place: SyncDirectory, decrypt: Decrypt | None) -> tuple[Rendered, ...]:
    """The objects of a plain directory (in a worker thread)."""
    documents: list[Rendered] = []
    total, settler = 0, Settler()
    for file in manifest_files(place):
        where = place.where(file)
        raw = read_manifest(place, file, remaining=files.MAX_SYNC_BYTES - total)
        total += len(raw)
        locate = file_locator(raw)
        for source in file_sources(raw, where, syntax_of(file.name), decrypt):
            documents.extend(objects(source, where, locate))
            settler.parsed(source.document.size)
    return tuple(documents)


async def _built_objects(
    place: SyncDirectory, kfile: Path, binary: str | Path | None, timeout: float, decrypt: Decrypt | None
) -> tuple[Rendered, ...]:
    try:
        built = await kustomize_build(
            place.directory, root=place.root, binary=binary, timeout=timeout, decrypt=decrypt
        )
    except KustomizeError as e:
        raise RenderError(e.detail, file=e.directory, temporary=e.temporary) from e
    where = place.where(kfile)

    def documents() -> tuple[Rendered, ...]:
        found: list[Rendered] = []
        settler = Settler()
        for source in output_sources(built.output, where, decrypt, built.decrypted):
            found.extend(objects(source, where))
            settler.parsed(source.document.size)
        return tuple(found)

    return await asyncio.to_thread(documents)


def _digest(objects: Iterable[Rendered]) -> str:
    """sha256 of the objects as one canonical JSON array, hashed object by object.

    Equal to hashing ``json.dumps([...], sort_keys=True, separators=(",", ":"))``
    but never holds the interpreter for one huge dump.
    """
    digest = hashlib.sha256(b"[")
    for number, rendered in enumerate(objects):
        if number:
            digest.update(b",")
        text = json.dumps(rendered.obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest.update(text.encode())
    digest.update(b"]")
    return digest.hexdigest()

"""Rendering: a directory of one git revision becomes the Kubernetes objects a sync applies.

The modules, in the order a render runs through them:

- `files` — the sync directory, which files are manifests, reading them safely;
- `kustomization`, `kustomize`, `workdir` — kustomize overlays: the graph and
  its refused references, the locked-down build, the private copy of
  decrypted inputs;
- `parse` — bytes to documents, bounded (through `fleetd.util.yamldoc`);
- `decrypt` — SOPS-encrypted documents;
- `objects` — documents to checked objects;
- `variables`, `scope` — per-cluster substitution, target namespace, duplicates;
- `plaintext` — decrypted values kept verbatim, plaintext Secrets found;
- `pipeline` — `load` + `finish` = `render`; `cache` — shared across clusters.

Everything a consumer needs is importable from here.
"""

from fleetd.render.cache import DEFAULT_CACHE_SIZE, RenderCache
from fleetd.render.errors import KustomizeError, RenderError
from fleetd.render.model import (
    ClusterScoped,
    Decrypt,
    Loaded,
    Rendered,
    RenderResult,
    api_group,
    object_ref,
)
from fleetd.render.pipeline import finish, load, render, sync_files
from fleetd.render.plaintext import is_plaintext_secret
from fleetd.render.plaintext import warning as plaintext_warning
from fleetd.render.scope import CLUSTER_SCOPED
from fleetd.render.variables import SUBSTITUTE_ANNOTATION
from fleetd.render.workdir import sweep_stale_workdirs

__all__ = [
    "CLUSTER_SCOPED",
    "DEFAULT_CACHE_SIZE",
    "SUBSTITUTE_ANNOTATION",
    "ClusterScoped",
    "Decrypt",
    "KustomizeError",
    "Loaded",
    "RenderCache",
    "RenderError",
    "RenderResult",
    "Rendered",
    "api_group",
    "finish",
    "is_plaintext_secret",
    "load",
    "object_ref",
    "plaintext_warning",
    "render",
    "sweep_stale_workdirs",
    "sync_files",
]

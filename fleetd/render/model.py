"""What rendering produces: rendered objects with their origin, and the results shared across clusters.

Results are shared by every cluster that asks for the same render, so they
are read-only by contract: the dataclasses are frozen, but the objects are
plain dicts (cheap, and what a Kubernetes client wants). Consumers that
change an object deep-copy it first (`copy.deepcopy`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from fleetd.render.errors import RenderError

ClusterScoped = Callable[[str, str], bool]
"""``(apiVersion, kind) -> True`` when the kind is cluster-scoped."""
Decrypt = Callable[[bytes, str], bytes]
"""``(encrypted bytes, SOPS format) -> plaintext bytes``; raises a FleetdError on failure.

The format is ``"yaml"`` or ``"json"`` for manifests, and also ``"dotenv"`` or
``"binary"`` for kustomize generator inputs. Called from worker threads: it
must be thread-safe.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """One object and where it came from. `obj` is shared: deep-copy it before changing it."""

    obj: dict[str, Any]
    file: str
    """File relative to the repository root (for kustomize: the kustomization file)."""
    document: int
    """1-based document of `file` (for kustomize: of the build output)."""
    item: int | None = None
    """1-based item when the document was a v1 List, else None."""
    line: int | None = None
    """1-based line where the document starts in `file`; None for kustomize output."""
    from_sops: bool = False
    """The object came out of SOPS-encrypted data (so it is no plaintext Secret in git)."""
    verbatim: frozenset[str] = field(default=frozenset(), repr=False)
    """Decrypted texts holding a ``$``: string values containing one are never substituted (never in repr)."""

    @property
    def ref(self) -> str:
        """The object as ``apiVersion/Kind namespace/name``."""
        return object_ref(self.obj)

    def where(self) -> str:
        """``file[:line] (document N[, item M])`` for messages."""
        item = f", item {self.item}" if self.item is not None else ""
        line = f":{self.line}" if self.line is not None else ""
        return f"{self.file}{line} (document {self.document}{item})"

    def error(self, message: str, *, line: int | None = None) -> RenderError:
        """A RenderError located at this object (at `line` when given, else where its document starts)."""
        return RenderError(
            message,
            file=self.file,
            document=self.document,
            item=self.item,
            line=self.line if line is None else line,
            object_ref=self.ref,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """The objects of one (revision, path) before variables and namespace: see `fleetd.render.load`."""

    revision: str
    path: PurePosixPath
    documents: tuple[Rendered, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderResult:
    """The objects one sync applies to one cluster, in file order."""

    revision: str
    path: PurePosixPath
    objects: tuple[Rendered, ...]
    digest: str
    """sha256 of the canonical JSON of the objects: equal digests, equal objects."""
    plaintext_secrets: tuple[Rendered, ...] = ()
    """Secrets of `objects` that are in git unencrypted (see `fleetd.render.secrets`): warn about them."""


def api_group(api_version: str) -> str:
    """The group of an apiVersion: ``apps/v1`` -> ``apps``, ``v1`` -> ``""``."""
    return api_version.rpartition("/")[0]


def object_ref(obj: Mapping[str, Any]) -> str:
    """``apps/v1/Deployment demo/web`` or ``v1/Namespace demo`` for messages."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    parts = (meta.get("namespace"), meta.get("name"))
    name = "/".join(part for part in parts if isinstance(part, str) and part)
    return f"{_text(obj.get('apiVersion'))}/{_text(obj.get('kind'))} {name}"


def _text(value: object) -> str:
    return value if isinstance(value, str) else "?"

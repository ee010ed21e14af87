"""Render: turn one directory of one git revision into Kubernetes objects.

A sync names a directory (``path``) of the repository. Rendering it happens
in two steps, so the expensive one is shared by every cluster:

1. `load` — per (revision, path): read the manifests, decrypt SOPS files,
   check that every document is an object. The result, `Loaded`, does not
   depend on the cluster.
2. `finish` — per (variables, namespace): substitute variables, give
   namespaced objects the target namespace, refuse duplicates. Pure and fast.

`render` does both; `RenderCache` remembers both levels, so the fleet runs
one kustomize build per (revision, path) and one substitution per
(revision, path, variables, namespace), however many clusters ask.

Which files count (plain directories)
    A directory without a kustomization is walked recursively, in sorted
    order (so output and errors are deterministic), without following
    symbolic links to directories. Files ending in ``.yaml``, ``.yml`` or
    ``.json`` are manifests; any other file (README.md, scripts) is ignored.
    Also ignored, because they are well-known YAML that is not a manifest:
    anything whose name starts with a dot (``.sops.yaml``, ``.github/``),
    files named ``kustomization.yaml``/``.yml``/``Kustomization``, and
    documents of a ``kustomize.config.k8s.io`` kind. Empty documents are
    skipped. Every other document must be a mapping with ``apiVersion``,
    ``kind`` and ``metadata.name``, else the render fails naming the file and
    the document; a v1 ``List`` is expanded into its items. A directory with
    no manifests renders to no objects. YAML is read as Kubernetes reads it
    (YAML 1.1), except that dates stay strings and duplicate keys are errors.

kustomize overlays
    A directory holding a kustomization is built by `fleetd.render.kustomize`
    (locked down: no plugins, exec functions, Helm or network). Its output
    goes through the same checks; origins name the kustomization file and
    the document's position in the build output.

Variables (like Flux's post-build substitution)
    After building, every *string value* (never a key) of every object is
    scanned for ``${name}``, ``${name:=default}`` or ``${name:-default}``;
    the default applies when the variable is undefined or empty. ``$${name}``
    is a literal ``${name}``. Names match ``[A-Za-z_][A-Za-z0-9_]*``; other
    text, including ``$name`` without braces, is left alone. Working on parsed
    values means a value can never break the YAML structure and a whole-scalar
    value stays a string (``"${replicas}"`` does not become a number).
    Substitution is strict: an undefined variable without a default fails the
    render, naming the file, the object and every undefined variable of that
    object. An object annotated ``fleetd.dev/substitute: disabled`` is left
    untouched (scripts full of ``${HOME}``).

Target namespace
    With a sync namespace, namespaced objects without ``metadata.namespace``
    get it; an explicit namespace is kept. Cluster-scoped kinds never get
    one. A kind is cluster-scoped when a CustomResourceDefinition of the same
    render says ``scope: Cluster``, else when it is in `CLUSTER_SCOPED`, else
    when the caller's ``cluster_scoped(apiVersion, kind)`` hook says so
    (the sync engine backs it with API discovery); unknown kinds without a
    hook count as namespaced.

SOPS
    A file whose content carries SOPS metadata (a top-level ``sops`` mapping
    holding ``mac`` and ``lastmodified``) is encrypted, whatever its name. In a
    plain directory the whole file's bytes go to ``decrypt(data, "yaml" |
    "json")`` and its result replaces the file. For a kustomization,
    `fleetd.render.kustomize` decrypts every encrypted file the build reads
    (resources, patches, generator ``files``/``envs`` in any SOPS format) into
    a private copy before building (kustomize's transformations would break
    the MAC of an encrypted output document); a document of the output that
    is still encrypted goes to ``decrypt`` as JSON. Without ``decrypt``, when
    it fails, or when a file holds ``ENC[…]`` values without its metadata
    (truncated), the render fails naming the file: encrypted data is never
    applied, and a sync that fails to render applies and prunes nothing.
    Plaintext stays in memory (or, for kustomize, in a private 0700
    directory deleted after the build); parse errors of decrypted data and
    kustomize messages about it carry no plaintext.

Results are shared, so they are read-only by contract: `RenderResult` and
`Rendered` are frozen, but the objects are plain dicts (cheap, and what a
Kubernetes client wants). Consumers that change an object deep-copy it first
(`copy.deepcopy`). Hooks (``cluster_scoped``, ``decrypt``) are called
from a worker thread and must be thread-safe.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

import yaml

from fleetd.errors import FleetdError
from fleetd.render.kustomize import (
    DEFAULT_TIMEOUT,
    KUSTOMIZATION_FILES,
    KustomizeError,
    kustomization_file,
    kustomization_graph,
)
from fleetd.render.kustomize import build as kustomize_build
from fleetd.secrets.scan import NO_KEYS, TRUNCATED, failure_text, is_truncated
from fleetd.secrets.sops import is_sops_encrypted

ClusterScoped = Callable[[str, str], bool]
"""``(apiVersion, kind) -> True`` when the kind is cluster-scoped."""
Decrypt = Callable[[bytes, str], bytes]
"""``(encrypted bytes, SOPS format) -> plaintext bytes``; raises a FleetdError on failure.

The format is ``"yaml"`` or ``"json"`` for manifests, and also ``"dotenv"`` or
``"binary"`` for kustomize generator inputs.
"""

SUBSTITUTE_ANNOTATION = "fleetd.dev/substitute"
DEFAULT_CACHE_SIZE = 256
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

#: (API group, kind) of the built-in cluster-scoped kinds.
CLUSTER_SCOPED = frozenset(
    {("", kind) for kind in ("Namespace", "Node", "PersistentVolume", "ComponentStatus")}
    | {("rbac.authorization.k8s.io", k) for k in ("ClusterRole", "ClusterRoleBinding")}
    | {("apiextensions.k8s.io", "CustomResourceDefinition"), ("apiregistration.k8s.io", "APIService")}
    | {("storage.k8s.io", k) for k in ("StorageClass", "CSIDriver", "CSINode", "VolumeAttachment")}
    | {("storage.k8s.io", "VolumeAttributesClass"), ("scheduling.k8s.io", "PriorityClass")}
    | {
        ("admissionregistration.k8s.io", f"{kind}{suffix}")
        for kind in ("ValidatingAdmissionPolicy", "MutatingAdmissionPolicy")
        for suffix in ("", "Binding")
    }
    | {("admissionregistration.k8s.io", f"{k}WebhookConfiguration") for k in ("Mutating", "Validating")}
    | {("networking.k8s.io", k) for k in ("IngressClass", "IPAddress", "ServiceCIDR")}
    | {("node.k8s.io", "RuntimeClass"), ("storagemigration.k8s.io", "StorageVersionMigration")}
    | {("certificates.k8s.io", k) for k in ("CertificateSigningRequest", "ClusterTrustBundle")}
    | {("flowcontrol.apiserver.k8s.io", k) for k in ("FlowSchema", "PriorityLevelConfiguration")}
    | {("resource.k8s.io", k) for k in ("DeviceClass", "ResourceSlice")}
)


class RenderError(FleetdError):
    """A sync path could not be rendered; located as precisely as possible."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        document: int | None = None,
        item: int | None = None,
        object_ref: str | None = None,
        temporary: bool = False,
    ) -> None:
        self.message = message
        """What is wrong and what to do."""
        self.file = file
        """File (or sync directory) relative to the repository root."""
        self.document = document
        """1-based document of `file` (of the build output for kustomize)."""
        self.item = item
        """1-based item of a v1 List document."""
        self.object_ref = object_ref
        """The object, e.g. ``apps/v1/Deployment demo/web``."""
        self.temporary = temporary
        """True when the same revision may render later (timeouts); such errors are not cached."""
        super().__init__(self._describe())

    def _describe(self) -> str:
        details = [f"document {self.document}"] if self.document is not None else []
        details += [f"item {self.item}"] if self.item is not None else []
        if self.object_ref:  # "apps/v1/Deployment demo/web" reads as "Deployment demo/web"
            type_part, _, name = self.object_ref.partition(" ")
            details.append(f"{type_part.rsplit('/', 1)[-1]} {name}".strip())
        where = " ".join(filter(None, [self.file, f"({', '.join(details)})" if details else ""]))
        return f"{where}: {self.message}" if where else self.message


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

    @property
    def ref(self) -> str:
        """The object as ``apiVersion/Kind namespace/name``."""
        return object_ref(self.obj)

    def where(self) -> str:
        """``file (document N[, item M])`` for messages."""
        item = f", item {self.item}" if self.item is not None else ""
        return f"{self.file} (document {self.document}{item})"

    def error(self, message: str) -> RenderError:
        """A RenderError located at this object."""
        return RenderError(
            message, file=self.file, document=self.document, item=self.item, object_ref=self.ref
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """The objects of one (revision, path) before variables and namespace: see `load`."""

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


def api_group(api_version: str) -> str:
    """The group of an apiVersion: ``apps/v1`` -> ``apps``, ``v1`` -> ``""``."""
    return api_version.rpartition("/")[0]


def object_ref(obj: Mapping[str, Any]) -> str:
    """``apps/v1/Deployment demo/web`` or ``v1/Namespace demo`` for messages."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name = "/".join(str(part) for part in (meta.get("namespace"), meta.get("name")) if part)
    return f"{obj.get('apiVersion')}/{obj.get('kind')} {name}"


# --- render -----------------------------------------------------------------


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
) -> RenderResult:
    """Render `path` of the snapshot `root` (at `revision`) for one cluster; RenderError if it cannot."""
    loaded = await load(
        root, revision, path, kustomize=kustomize, kustomize_timeout=kustomize_timeout, decrypt=decrypt
    )
    return await asyncio.to_thread(finish, loaded, variables, namespace, cluster_scoped=cluster_scoped)


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
    root, directory, kfile = await asyncio.to_thread(_sync_directory, root, revision, path)
    if kfile is None:
        documents = await asyncio.to_thread(_plain_documents, root, directory, decrypt)
    else:
        output = await _build(root, directory, kustomize, kustomize_timeout, decrypt)
        where = kfile.relative_to(root).as_posix()
        documents = await asyncio.to_thread(_built_documents, output, where, decrypt)
    return Loaded(revision=revision, path=path, documents=documents)


def finish(
    loaded: Loaded,
    variables: Mapping[str, str],
    namespace: str | None,
    *,
    cluster_scoped: ClusterScoped | None = None,
) -> RenderResult:
    """Substitute `variables`, default the namespace, refuse duplicates; never mutates `loaded`."""
    objects = tuple(_substituted(doc, variables) for doc in loaded.documents)
    if namespace:
        scoped = _scope_predicate(objects, cluster_scoped)
        for rendered in objects:
            _default_namespace(rendered.obj, namespace, scoped)
    _check_duplicates(objects)
    return RenderResult(revision=loaded.revision, path=loaded.path, objects=objects, digest=_digest(objects))


def sync_files(root: Path, revision: str, path: PurePosixPath) -> list[Path]:
    """Every file that rendering `path` reads: its manifests, or the files its kustomizations name.

    For ``fleetd check``, which looks for encrypted files: kustomize references
    that rendering would refuse (remote, outside the repository) are skipped,
    not errors. RenderError when the sync path itself is unusable.
    """
    root, directory, kfile = _sync_directory(root, revision, path)
    if kfile is None:
        return list(_manifest_files(root, directory))
    return list(kustomization_graph(directory, root, strict=False).files)


def _sync_directory(root: Path, revision: str, path: PurePosixPath) -> tuple[Path, Path, Path | None]:
    """(resolved root, resolved sync directory, its kustomization file); RenderError if unusable."""
    if path.is_absolute() or ".." in path.parts:
        raise RenderError(f"sync path {path} must be relative to the repository root, without '..'")
    root = root.resolve()
    directory = (root / path).resolve()
    if not directory.is_relative_to(root):
        raise RenderError(f"sync path {path} leads out of the repository through a symbolic link")
    if not directory.is_dir():
        raise RenderError(
            f"sync path {path} is not a directory at revision {revision[:12]} — "
            "check the sync's path and that the change is pushed"
        )
    return root, directory, kustomization_file(directory)


async def _build(
    root: Path, directory: Path, binary: str | Path | None, timeout: float, decrypt: Decrypt | None
) -> str:
    try:
        return await kustomize_build(directory, root=root, binary=binary, timeout=timeout, decrypt=decrypt)
    except KustomizeError as e:
        raise RenderError(e.detail, file=e.directory, temporary=e.temporary) from e


# --- reading files ----------------------------------------------------------


def _plain_documents(root: Path, directory: Path, decrypt: Decrypt | None) -> tuple[Rendered, ...]:
    documents: list[Rendered] = []
    for file in _manifest_files(root, directory):
        where = file.relative_to(root).as_posix()
        fmt = "json" if file.suffix.lower() == ".json" else "yaml"
        parsed = _decrypted_file(_read(file, where), where, fmt, decrypt)
        for index, doc in parsed:
            documents.extend(_objects(doc, where, index))
    return tuple(documents)


def _manifest_files(root: Path, directory: Path) -> Iterator[Path]:
    """Manifest files under `directory`, depth first, sorted; see the module docstring."""
    for current, dirs, files in os.walk(directory, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if _is_manifest_name(name):
                file = Path(current, name)
                if not file.resolve().is_relative_to(root):
                    where = file.relative_to(root).as_posix()
                    raise RenderError("symbolic link to outside the repository", file=where)
                yield file


def _raise(error: OSError) -> None:
    raise RenderError(f"cannot read the sync path: {error}")


def _is_manifest_name(name: str) -> bool:
    skipped = name.startswith(".") or name in KUSTOMIZATION_FILES
    return not skipped and name.lower().endswith(MANIFEST_SUFFIXES)


def _read(file: Path, where: str) -> bytes:
    try:
        return file.read_bytes()
    except OSError as e:
        raise RenderError(f"cannot read: {e.strerror}", file=where) from e


def _decrypted_file(raw: bytes, where: str, fmt: str, decrypt: Decrypt | None) -> list[tuple[int, Any]]:
    """(1-based index, document) of a file, decrypted first when SOPS-encrypted."""
    if is_truncated(raw):
        raise RenderError(TRUNCATED, file=where)
    parsed = _parse(raw, where, fmt)
    if not any(is_sops_encrypted(doc) for _, doc in parsed):
        return parsed
    parsed = _parse(_call_decrypt(decrypt, raw, fmt, where), where, fmt)
    if any(is_sops_encrypted(doc) for _, doc in parsed):
        raise RenderError("still SOPS-encrypted after decryption", file=where)
    return parsed


def _built_documents(output: str, where: str, decrypt: Decrypt | None) -> tuple[Rendered, ...]:
    documents: list[Rendered] = []
    for index, doc in _parse(output.encode(), where, "yaml"):
        if is_sops_encrypted(doc):
            plain = _call_decrypt(decrypt, json.dumps(doc).encode(), "json", where, index)
            ((_, doc),) = _parse(plain, where, "json", first=index)
        documents.extend(_objects(doc, where, index))
    return tuple(documents)


def _call_decrypt(
    decrypt: Decrypt | None, data: bytes, fmt: str, where: str, document: int | None = None
) -> bytes:
    if decrypt is None:
        raise RenderError(NO_KEYS, file=where, document=document)
    try:
        return decrypt(data, fmt)
    except FleetdError as e:
        raise RenderError(f"cannot decrypt: {failure_text(e)}", file=where, document=document) from e


# --- parsing ----------------------------------------------------------------

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(_BaseLoader):
    """Safe YAML as Kubernetes reads it, but dates stay strings and duplicate keys are errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                if key.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key.value!r}", key.start_mark
                    )
                seen.add(key.value)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def _parse(raw: bytes, where: str, fmt: str, *, first: int = 1) -> list[tuple[int, Any]]:
    """(index, JSON-compatible document) for every document of `raw`, numbered from `first`.

    Messages carry line numbers and the parser's complaint, never the text
    itself (it may be decrypted), and are not chained for the same reason.
    """
    docs: list[Any] = []
    try:
        if fmt == "json":
            docs.append(json.loads(raw, object_pairs_hook=_unique_keys))
        else:
            docs.extend(yaml.load_all(raw, Loader=_Loader))  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as e:
        line = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise RenderError(
            f"invalid YAML{line}: {e.problem or e.context}", file=where, document=first + len(docs)
        ) from None
    except (yaml.YAMLError, ValueError) as e:
        detail = _json_problem(e) if fmt == "json" else "unreadable YAML"
        raise RenderError(detail, file=where, document=first + len(docs)) from None
    return [(first + n, _jsonable(doc, where, first + n)) for n, doc in enumerate(docs)]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _json_problem(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON at line {error.lineno}: {error.msg}"
    return f"invalid JSON: {error}"


def _jsonable(doc: Any, where: str, index: int) -> Any:
    """`doc` as JSON would carry it (keys become strings), or RenderError."""
    try:
        return json.loads(json.dumps(doc, allow_nan=False))
    except (TypeError, ValueError):
        raise RenderError(
            "holds a value JSON cannot carry (binary, set, explicit timestamp, NaN or a complex key); "
            "quote it as a string",
            file=where,
            document=index,
        ) from None


# --- documents to objects ---------------------------------------------------


def _objects(doc: Any, where: str, index: int) -> Iterator[Rendered]:
    """The objects of one document: none, one, or a List's items."""
    if doc is None or _is_kustomize_config(doc):
        return
    if isinstance(doc, dict) and doc.get("apiVersion") == "v1" and doc.get("kind") == "List":
        items = doc.get("items")
        if not isinstance(items, list):
            raise RenderError("a v1 List needs an 'items' array", file=where, document=index)
        for number, item in enumerate(items, 1):
            yield _checked(Rendered(obj=item, file=where, document=index, item=number))
        return
    yield _checked(Rendered(obj=doc, file=where, document=index))


def _is_kustomize_config(doc: Any) -> bool:
    api_version = doc.get("apiVersion") if isinstance(doc, dict) else None
    return isinstance(api_version, str) and api_group(api_version) == "kustomize.config.k8s.io"


def _checked(rendered: Rendered) -> Rendered:
    obj: Any = rendered.obj
    if not isinstance(obj, dict):
        raise RenderError(
            f"is a {_yaml_type(obj)}, not a Kubernetes object (a mapping with apiVersion, kind and "
            "metadata.name); move non-manifest YAML into a dot-directory or give it another extension",
            file=rendered.file,
            document=rendered.document,
            item=rendered.item,
        )
    if missing := _missing_fields(obj):
        raise rendered.error(
            f"not a Kubernetes object: missing {', '.join(missing)}; every YAML document under a "
            "sync path needs apiVersion, kind and metadata.name (move other YAML into a "
            "dot-directory or give it another extension)"
        )
    return rendered


def _missing_fields(obj: dict[str, Any]) -> list[str]:
    meta = obj.get("metadata")
    fields = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata.name": meta.get("name") if isinstance(meta, dict) else None,
    }
    missing = [field for field, value in fields.items() if not (isinstance(value, str) and value)]
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    if namespace is not None and not isinstance(namespace, str):
        missing.append("a string metadata.namespace")
    return missing


def _yaml_type(value: object) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


# --- variables --------------------------------------------------------------

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[=-])([^}]*))?\}")


def _substituted(rendered: Rendered, variables: Mapping[str, str]) -> Rendered:
    """A copy of `rendered` with variables substituted into its string values."""
    annotations = rendered.obj["metadata"].get("annotations")
    if isinstance(annotations, dict) and annotations.get(SUBSTITUTE_ANNOTATION) == "disabled":
        return dataclasses.replace(rendered, obj=copy.deepcopy(rendered.obj))
    undefined: set[str] = set()
    obj = _substitute_value(rendered.obj, variables, undefined)
    if undefined:
        raise rendered.error(_undefined_message(sorted(undefined)))
    return dataclasses.replace(rendered, obj=obj)


def _substitute_value(value: Any, variables: Mapping[str, str], undefined: set[str]) -> Any:
    if isinstance(value, str):
        return _substitute_text(value, variables, undefined) if "${" in value else value
    if isinstance(value, dict):
        return {key: _substitute_value(item, variables, undefined) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute_value(item, variables, undefined) for item in value]
    return value


def _substitute_text(text: str, variables: Mapping[str, str], undefined: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped, name, operator, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        value = variables.get(name)
        if operator and not value:
            return str(default)
        if value is None:
            undefined.add(name)
            return match.group(0)
        return value

    return _VARIABLE.sub(replace, text)


def _undefined_message(names: list[str]) -> str:
    listed = ", ".join(f"${{{name}}}" for name in names)
    plural = "s" if len(names) > 1 else ""
    return (
        f"undefined variable{plural} {listed} — define {'them' if plural else 'it'} in the cluster's "
        f"[variables] or give a default: ${{{names[0]}:=<default>}} (write $${{{names[0]}}} for a "
        f"literal ${{{names[0]}}}, or annotate the object {SUBSTITUTE_ANNOTATION}: disabled)"
    )


# --- namespaces and duplicates ----------------------------------------------


def _scope_predicate(objects: Iterable[Rendered], hook: ClusterScoped | None) -> ClusterScoped:
    """Whether (apiVersion, kind) is cluster-scoped: this render's CRDs, then built-ins, then `hook`."""
    crd_scopes = dict(filter(None, (_crd_scope(rendered.obj) for rendered in objects)))

    def cluster_scoped(api_version: str, kind: str) -> bool:
        key = (api_group(api_version), kind)
        if key in crd_scopes:
            return crd_scopes[key]
        return key in CLUSTER_SCOPED or (hook is not None and hook(api_version, kind))

    return cluster_scoped


def _crd_scope(obj: dict[str, Any]) -> tuple[tuple[str, str], bool] | None:
    """((group, kind), cluster-scoped) that a CustomResourceDefinition declares, else None."""
    if (api_group(obj["apiVersion"]), obj["kind"]) != ("apiextensions.k8s.io", "CustomResourceDefinition"):
        return None
    spec = obj.get("spec")
    names = spec.get("names") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(names, dict):
        return None
    group, kind = spec.get("group"), names.get("kind")
    if not isinstance(group, str) or not isinstance(kind, str):
        return None
    return (group, kind), spec.get("scope") == "Cluster"


def _default_namespace(obj: dict[str, Any], namespace: str, cluster_scoped: ClusterScoped) -> None:
    meta = obj["metadata"]
    if not meta.get("namespace") and not cluster_scoped(obj["apiVersion"], obj["kind"]):
        meta["namespace"] = namespace


def _check_duplicates(objects: Iterable[Rendered]) -> None:
    seen: dict[tuple[str, str, str, str], Rendered] = {}
    for rendered in objects:
        obj, meta = rendered.obj, rendered.obj["metadata"]
        key = (api_group(obj["apiVersion"]), obj["kind"], meta.get("namespace") or "", meta["name"])
        first = seen.setdefault(key, rendered)
        if first is not rendered:
            raise rendered.error(
                f"defined twice: also in {first.where()} — an object may appear only once per sync"
            )


def _digest(objects: Iterable[Rendered]) -> str:
    canonical = json.dumps(
        [rendered.obj for rendered in objects], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- cache ------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _TaskCache(Generic[K, V]):
    """An LRU of tasks: callers of one key share one task; failures to retry are forgotten."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._tasks: OrderedDict[K, asyncio.Task[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tasks)

    async def get(self, key: K, start: Callable[[], Coroutine[Any, Any, V]], name: str) -> V:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(start(), name=name)
            task.add_done_callback(functools.partial(self._settled, key))
            self._tasks[key] = task
            while len(self._tasks) > self._size:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(key)
        # shield: a cancelled caller must not cancel the render the others wait for.
        return await asyncio.shield(task)

    def _settled(self, key: K, task: asyncio.Task[V]) -> None:
        error = None if task.cancelled() else task.exception()  # also marks it retrieved
        permanent = isinstance(error, RenderError) and not error.temporary
        if (task.cancelled() or (error is not None and not permanent)) and self._tasks.get(key) is task:
            del self._tasks[key]

    def evict(self, keep: Callable[[K], bool]) -> int:
        stale = [key for key in self._tasks if not keep(key)]
        for key in stale:
            del self._tasks[key]
        return len(stale)


RenderKey = tuple[str, PurePosixPath, frozenset[tuple[str, str]], str | None]


class RenderCache:
    """Render once per (revision, path, variables, namespace) and share the result across clusters.

    Two levels: `load` results per (revision, path) and `finish` results per
    full key, each an LRU of `size` entries. Concurrent callers of one key
    await the same task. Results and permanent RenderErrors are remembered
    (the same revision gives the same error); temporary errors, cancellations
    and unexpected exceptions are forgotten so the next call retries.
    `root` is not part of the key: one revision is one snapshot. The hooks
    of the first caller of a key are the ones used, so callers sharing a key
    must pass equivalent hooks. After changing decryption keys, call `clear`.
    """

    def __init__(self, *, size: int = DEFAULT_CACHE_SIZE) -> None:
        self._loads: _TaskCache[tuple[str, PurePosixPath], Loaded] = _TaskCache(size)
        self._renders: _TaskCache[RenderKey, RenderResult] = _TaskCache(size)

    def __len__(self) -> int:
        """Number of remembered (or in-flight) renders."""
        return len(self._renders)

    async def get(
        self,
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
    ) -> RenderResult:
        """Like `render`, but shared. The result is read-only: deep-copy objects before changing them."""
        frozen_vars = dict(variables)  # the caller may change its mapping while we render

        async def start_load() -> Loaded:
            return await load(
                root,
                revision,
                path,
                kustomize=kustomize,
                kustomize_timeout=kustomize_timeout,
                decrypt=decrypt,
            )

        async def start_render() -> RenderResult:
            loaded = await self._loads.get((revision, path), start_load, f"load {path}@{revision[:12]}")
            return await asyncio.to_thread(
                finish, loaded, frozen_vars, namespace, cluster_scoped=cluster_scoped
            )

        key = (revision, path, frozenset(frozen_vars.items()), namespace)
        return await self._renders.get(key, start_render, f"render {path}@{revision[:12]}")

    def evict_except(self, revision: str) -> int:
        """Forget every entry of another revision; returns how many renders were forgotten.

        In-flight renders of old revisions still finish for the callers awaiting them.
        """
        self._loads.evict(lambda key: key[0] == revision)
        return self._renders.evict(lambda key: key[0] == revision)

    def clear(self) -> None:
        """Forget everything (e.g. after the decryption keys changed)."""
        self._loads.evict(lambda _: False)
        self._renders.evict(lambda _: False)

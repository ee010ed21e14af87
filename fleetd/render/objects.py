"""From documents to Kubernetes objects: what a document must look like to be applied.

Empty documents and documents of a ``kustomize.config.k8s.io`` kind are
skipped; a ``v1 List`` is expanded into its items. Every other document
must be an object, checked here before anything uses it, so that no later
stage meets a malformed one:

- a mapping with ``apiVersion`` (``version`` or ``group/version``) and
  ``kind``, non-empty strings;
- ``metadata`` a mapping with ``name`` (a non-empty string usable in a URL
  path: no ``/`` or ``%``, not ``.`` or ``..``) and, if set, ``namespace``
  likewise;
- ``metadata.labels`` and ``metadata.annotations``, if set, mappings of
  strings to strings (``enabled: true`` must be quoted).

A failure is a RenderError naming the file, document (and List item), the
line of the offending field where the file can tell it, the object, every
problem of the object and the fix. Messages name fields and types, never
values (a value may be a decrypted secret); names are identities, not
secrets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fleetd.render.decrypt import Source
from fleetd.render.errors import RenderError
from fleetd.render.model import Rendered, api_group
from fleetd.util import yamldoc

Locate = Callable[[int, tuple[str | int, ...]], int | None]
"""``(document, path) -> line`` of a field in the file, when known."""

_API_VERSION = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]+$")
_NOT_AN_OBJECT = (
    "every YAML document under a sync path needs apiVersion, kind and metadata.name (move other YAML "
    "into a dot-directory or give it another extension)"
)


def objects(source: Source, where: str, locate: Locate | None = None) -> Iterator[Rendered]:
    """The objects of one document: none, one, or a List's items; RenderError for a malformed one."""
    doc = source.document.value
    index = source.document.index
    if doc is None or _is_kustomize_config(doc):
        return
    base = Rendered(
        obj={},
        file=where,
        document=index,
        line=source.line,
        from_sops=source.from_sops,
        verbatim=source.verbatim,
    )
    if isinstance(doc, dict) and doc.get("apiVersion") == "v1" and doc.get("kind") == "List":
        items = doc.get("items")
        if not isinstance(items, list):
            raise RenderError(
                "a v1 List needs an 'items' array", file=where, document=index, line=source.line
            )
        for number, item in enumerate(items, 1):
            yield _checked(_with(base, item, number), ("items", number - 1), locate)
        return
    yield _checked(_with(base, doc, None), (), locate)


def _with(base: Rendered, obj: Any, item: int | None) -> Rendered:
    return Rendered(
        obj=obj,
        file=base.file,
        document=base.document,
        item=item,
        line=base.line,
        from_sops=base.from_sops,
        verbatim=base.verbatim,
    )


def _is_kustomize_config(doc: Any) -> bool:
    api_version = doc.get("apiVersion") if isinstance(doc, dict) else None
    return isinstance(api_version, str) and api_group(api_version) == "kustomize.config.k8s.io"


def _checked(rendered: Rendered, prefix: tuple[str | int, ...], locate: Locate | None) -> Rendered:
    obj: Any = rendered.obj
    if not isinstance(obj, dict):
        raise RenderError(
            f"is {describe(obj)}, not a Kubernetes object (a mapping with apiVersion, kind and "
            "metadata.name); move non-manifest YAML into a dot-directory or give it another extension",
            file=rendered.file,
            document=rendered.document,
            item=rendered.item,
            line=rendered.line,
        )
    problems = list(_problems(obj))
    if not problems:
        return rendered
    line = locate(rendered.document, prefix + problems[0][0]) if locate else None
    missing = [text for _, text in problems if text.startswith("missing ")]
    if missing and len(missing) == len(problems):
        message = f"not a Kubernetes object: {'; '.join(missing)}; {_NOT_AN_OBJECT}"
    else:
        message = "; ".join(text for _, text in problems)
    raise rendered.error(message, line=line)


Problem = tuple[tuple[str | int, ...], str]


def _problems(obj: dict[str, Any]) -> Iterator[Problem]:
    """(path, complaint) for everything wrong with the shape of `obj`."""
    yield from _type_field(obj, "apiVersion", "like v1 or apps/v1")
    api_version = obj.get("apiVersion")
    if isinstance(api_version, str) and api_version and not _API_VERSION.match(api_version):
        yield ("apiVersion",), "apiVersion must be 'version' or 'group/version' (like v1 or apps/v1)"
    yield from _type_field(obj, "kind", "like ConfigMap")
    meta = obj.get("metadata")
    if meta is None:
        yield ("metadata",), "missing metadata.name"
        return
    if not isinstance(meta, dict):
        yield ("metadata",), f"metadata must be a mapping, not {describe(meta)}"
        return
    yield from _name(meta, "name", required=True)
    yield from _name(meta, "namespace", required=False)
    for field in ("labels", "annotations"):
        yield from _string_map(meta, field)


def _type_field(obj: dict[str, Any], field: str, example: str) -> Iterator[Problem]:
    value = obj.get(field)
    if value is None or value == "":
        yield (field,), f"missing {field}"
    elif not isinstance(value, str):
        yield (field,), f"{field} must be a string ({example}), not {describe(value)}"


def _name(meta: dict[str, Any], field: str, *, required: bool) -> Iterator[Problem]:
    value, path = meta.get(field), ("metadata", field)
    if value is None or value == "":
        if required:
            hint = (
                " (generateName is not supported: fleetd applies objects by name)"
                if "generateName" in meta
                else ""
            )
            yield path, f"missing metadata.{field}{hint}"
    elif not isinstance(value, str):
        yield path, f"metadata.{field} must be a string, not {describe(value)}"
    elif value in (".", "..") or "/" in value or "%" in value:
        yield path, f"metadata.{field} {value!r} may not be '.' or '..' nor contain '/' or '%'"


def _string_map(meta: dict[str, Any], field: str) -> Iterator[Problem]:
    value, path = meta.get(field), ("metadata", field)
    if value is None:
        return
    if not isinstance(value, dict):
        yield path, f"metadata.{field} must be a mapping of strings, not {describe(value)}"
        return
    for key, item in value.items():
        if not isinstance(item, str):
            yield (
                (*path, key),
                f"metadata.{field}.{key} must be a string, not {describe(item)} — quote it",
            )


def describe(value: object) -> str:
    """``a list``, ``a number``… for messages (never the value itself)."""
    kinds = {list: "a list", dict: "a mapping", str: "a string", bool: "a boolean", int: "a number"}
    kinds |= {float: "a number", type(None): "null"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def file_locator(raw: bytes) -> Locate:
    """A `Locate` for a YAML file's bytes (parsed again only when a problem is found)."""
    return lambda document, path: yamldoc.locate(raw, document, path)

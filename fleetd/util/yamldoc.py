"""YAML documents, bounded: the one module through which PyYAML enters fleetd.

Everything fleetd reads from a repository as YAML (manifests,
kustomizations, SOPS files) is parsed here and held to the `Limits` of
`fleetd.util.documents` (size, alias expansion, nodes, depth), so a YAML
bomb or a huge document is a `DocumentError` naming the document and line,
in milliseconds. A stream is cut into documents at its ``---`` lines
*before* parsing, so a document over the size limit is never parsed, and
each document's graph is measured (`fleetd.util.documents.measure_graph`)
before anything walks or copies it.

Flavours
    `load_manifests` reads YAML as Kubernetes does (YAML 1.1, safe), except
    that dates stay strings and duplicate keys are errors, and gives only what
    JSON can carry: mapping keys become strings as JSON writes them, and
    binary, set, ordered-map, timestamp and NaN/infinite values are errors.
    Aliased collections come back as independent copies. `load_json` (from
    `fleetd.util.documents`) gives the same guarantees for JSON.
    `load_plain` and `first_plain` are PyYAML's safe loader, bounded (for
    SOPS metadata and kustomizations). `compose_all` gives the node graph
    (for `fleetd.secrets.tree`, which types scalars the way Go's yaml.v3
    does), bounded too.

Errors never carry more of the input than the parser's short complaint;
callers handling decrypted text use `DocumentError.position` alone.
`dump` and `dump_all` write YAML with multi-line strings as literal blocks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode as MappingNode
from yaml.nodes import Node as Node
from yaml.nodes import ScalarNode as ScalarNode
from yaml.nodes import SequenceNode as SequenceNode

from fleetd.util.documents import (
    DEFAULT_LIMITS,
    Document,
    DocumentError,
    Limits,
    load_json,
    measure_graph,
    too_large,
    unshared,
)

__all__ = [
    "DEFAULT_LIMITS",
    "PLAIN_TAG",
    "Document",
    "DocumentError",
    "Limits",
    "MappingNode",
    "Node",
    "ScalarNode",
    "SequenceNode",
    "compose_all",
    "dump",
    "dump_all",
    "first_plain",
    "load_json",
    "load_manifests",
    "load_plain",
    "locate",
]

PLAIN_TAG = "!fleetd/plain"
"""The tag `compose_all(untagged_plain=True)` gives untagged plain scalars."""

_C_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_C_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


# --- loaders ----------------------------------------------------------------------------------


class _PlainLoader(_C_LOADER):  # type: ignore[valid-type,misc]  # the C loader is a runtime choice
    """PyYAML's safe loader (libyaml when available)."""


class _ManifestLoader(_C_LOADER):  # type: ignore[valid-type,misc]
    """Safe YAML as Kubernetes reads it, but dates stay strings, duplicate keys are errors, JSON only."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            raise _error(f"expected a mapping, found {node.id}", node)
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE:
                if key_node.value in seen:
                    raise _error(f"duplicate key {key_node.value!r}", key_node)
                seen.add(key_node.value)
        own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE)
        self.flatten_mapping(node)  # merged pairs first, then the node's own: later ones win
        mapping: dict[str, Any] = {}
        own_keys: set[str] = set()
        first_own = len(node.value) - own
        for number, (key_node, value_node) in enumerate(node.value):
            key = _json_key(self.construct_object(key_node, deep=deep), key_node)
            if number >= first_own:
                if key in own_keys:
                    raise _error(f"duplicate key {key!r} (two keys that JSON writes alike)", key_node)
                own_keys.add(key)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml_float(self, node: ScalarNode) -> float:
        value: float = super().construct_yaml_float(node)
        if math.isnan(value) or math.isinf(value):
            raise _error("NaN and infinite numbers cannot be carried by JSON; quote the value", node)
        return value


def _error(problem: str, node: Node) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _json_key(key: object, node: Node) -> str:
    """A mapping key as JSON writes it (``1`` -> ``"1"``, ``true`` -> ``"true"``)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool | int | float) or key is None:
        return json.dumps(key)
    kind = "a list" if isinstance(key, list) else "a mapping" if isinstance(key, dict) else type(key).__name__
    raise _error(f"a mapping key must be a string, not {kind}", node)


def _refuse(what: str, fix: str) -> Callable[[Any, Node], Any]:
    def construct(loader: Any, node: Node) -> Any:
        raise _error(f"{what} cannot be carried by JSON (Kubernetes objects are JSON); {fix}", node)

    return construct


for _tag, _what, _fix in (
    ("binary", "a !!binary value", "write it as a base64 string"),
    ("set", "a !!set", "use a mapping or a list"),
    ("omap", "an !!omap", "use a mapping"),
    ("pairs", "!!pairs", "use a mapping or a list"),
    ("timestamp", "a !!timestamp value", "quote it as a string"),
):
    _ManifestLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse(_what, _fix))
_ManifestLoader.add_constructor("tag:yaml.org,2002:float", _ManifestLoader.construct_yaml_float)
_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in _C_LOADER.yaml_implicit_resolvers.items()
}


class _UntaggedPlainLoader(_C_LOADER):  # type: ignore[valid-type,misc]
    """Composes nodes only; untagged plain scalars get `PLAIN_TAG` instead of PyYAML's YAML 1.1 guess."""

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0]:
            return PLAIN_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]


# --- streams ----------------------------------------------------------------------------------


def load_manifests(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Iterator[Document]:
    """Every document of YAML stream `data`, Kubernetes' way (see the module docstring), lazily."""
    for document, node, loader in _documents(data, _ManifestLoader, limits):
        shared = _measure(node, limits, document)
        value = _construct(loader, node, document)
        yield Document(unshared(value) if shared else value, document.index, document.line, document.size)


def load_plain(data: bytes | str, *, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """Every document of `data` with PyYAML's safe loader, bounded; DocumentError if unreadable."""
    values = []
    for document, node, loader in _documents(_as_bytes(data), _PlainLoader, limits):
        _measure(node, limits, document)
        values.append(_construct(loader, node, document))
    return values


def first_plain(data: bytes | str, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The first document of `data` (safe loader, bounded), None for an empty stream."""
    for document, node, loader in _documents(_as_bytes(data), _PlainLoader, limits):
        _measure(node, limits, document)
        return _construct(loader, node, document)
    return None


def compose_all(
    data: bytes | str, *, untagged_plain: bool = False, limits: Limits = DEFAULT_LIMITS
) -> list[Node]:
    """The node graph of every document of `data`, checked against `limits`.

    With `untagged_plain`, untagged plain scalars carry `PLAIN_TAG` and are
    left for the caller to type. Aliases stay shared nodes: walk them knowing
    the graph is bounded, not that it is a tree.
    """
    loader_class = _UntaggedPlainLoader if untagged_plain else _PlainLoader
    nodes = []
    for document, node, _ in _documents(_as_bytes(data), loader_class, limits):
        _measure(node, limits, document)
        nodes.append(node)
    return nodes


def locate(data: bytes, document: int, path: Sequence[str | int]) -> int | None:
    """1-based line of `path` (keys and list indices) in `document` of YAML stream `data`.

    The deepest part of the path that exists is located. None when the stream
    or the document cannot be read. For error messages: it parses again.
    """
    try:
        for found, node, _ in _documents(data, _PlainLoader, DEFAULT_LIMITS):
            if found.index == document:
                return found.line - node.start_mark.line + _walk_to(node, path).start_mark.line
    except DocumentError:
        return None
    return None


def _walk_to(node: Node, path: Sequence[str | int]) -> Node:
    for part in path:
        if isinstance(node, MappingNode):
            matches = [value for key, value in node.value if getattr(key, "value", None) == part]
            if not matches:
                return node
            node = matches[0]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


@dataclass(frozen=True, slots=True)
class _Place:
    index: int
    line: int
    size: int


def _documents(
    data: bytes, loader_class: type[yaml.SafeLoader], limits: Limits
) -> Iterator[tuple[_Place, Node, Any]]:
    """(place, root node, loader) for every document of `data`, composed chunk by chunk."""
    index = 0
    for offset, line, chunk in _chunks(data):
        if len(chunk) > limits.max_document_bytes:
            raise too_large(len(chunk), limits, index=index + 1, line=line)
        loader = loader_class(chunk)
        try:
            while True:
                node = _next_node(loader, data, offset, line, index + 1)
                if node is None:
                    break
                index += 1
                yield _Place(index, line + node.start_mark.line, len(chunk)), node, loader
        finally:
            loader.dispose()


def _next_node(loader: Any, data: bytes, offset: int, line: int, index: int) -> Node | None:
    try:
        node: Node | None = loader.get_node() if loader.check_node() else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if mark is None:
            raise DocumentError(problem, document=index) from None
        raise DocumentError(problem, document=index, line=line + mark.line, column=mark.column + 1) from None
    except yaml.reader.ReaderError as e:
        at = offset + max(e.position, 0)
        where = data.count(b"\n", 0, at) + 1
        raise DocumentError(
            f"not UTF-8 text (byte {at + 1} cannot be decoded); save the file as UTF-8",
            document=index,
            line=where,
        ) from None
    except (yaml.YAMLError, RecursionError) as e:
        raise DocumentError(f"unreadable YAML ({type(e).__name__})", document=index) from None
    return node


def _chunks(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(byte offset, 1-based first line, bytes) of each ``---``-separated part of `data`.

    A ``---`` at the start of a line ends any scalar (YAML forbids it inside
    one), so these are the parser's own document boundaries. Streams with
    directives (``%YAML``), which belong to the next document, or in UTF-16/32
    are not cut. Only ``bytes.find`` scans the data: no single step holds the
    interpreter for long, however large the stream.
    """
    unsplittable = data.startswith(b"%") or b"\n%" in data or data[:2] in (b"\xff\xfe", b"\xfe\xff")
    if unsplittable or b"\x00" in data[:4]:
        yield 0, 1, data
        return
    start, line, search = 0, 1, 0
    while (found := data.find(b"\n---", search)) >= 0:
        cut, search = found + 1, found + 4
        if data[cut + 3 : cut + 4] not in (b"", b" ", b"\t", b"\r", b"\n"):
            continue  # ---x is text, not a document marker
        yield start, line, data[start:cut]
        line += data.count(b"\n", start, cut)
        start = cut
    yield start, line, data[start:]


def _measure(node: Node, limits: Limits, place: _Place) -> bool:
    return measure_graph(node, limits, index=place.index, first_line=place.line)


def _construct(loader: Any, node: Node, place: _Place) -> Any:
    try:
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = place.line - node.start_mark.line + mark.line if mark else None
        column = mark.column + 1 if mark else None
        raise DocumentError(
            e.problem or "invalid YAML", document=place.index, line=line, column=column
        ) from None
    except yaml.YAMLError:
        raise DocumentError("unreadable YAML", document=place.index, line=place.line) from None
    except RecursionError:
        raise DocumentError("nests too deeply", document=place.index, line=place.line) from None


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data


# --- writing ----------------------------------------------------------------------------------


def _literal_blocks(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None  # the emitter falls back to quotes where | cannot hold it
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


class _ReadableDumper(yaml.SafeDumper):
    """Safe YAML, multi-line strings as literal blocks (the pure-Python emitter)."""


class _FastDumper(_C_DUMPER):  # type: ignore[valid-type,misc]  # the C dumper is a runtime choice
    """Safe YAML, multi-line strings as literal blocks (libyaml's emitter when available)."""


_ReadableDumper.add_representer(str, _literal_blocks)
_FastDumper.add_representer(str, _literal_blocks)


def dump(value: Any, *, sort_keys: bool = True) -> str:
    """`value` as block-style YAML for people (diffs): keys sorted, multi-line strings as ``|`` blocks."""
    text: str = yaml.dump(value, Dumper=_ReadableDumper, sort_keys=sort_keys, default_flow_style=False)
    return text


def dump_all(documents: Sequence[Any], *, sort_keys: bool = False) -> str:
    """`documents` as one YAML stream (``---`` between several), keys in order, unicode kept."""
    text: str = yaml.dump_all(
        documents,
        Dumper=_FastDumper,
        sort_keys=sort_keys,
        allow_unicode=True,
        explicit_start=len(documents) > 1,
    )
    return text

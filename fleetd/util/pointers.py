"""JSON pointers (RFC 6901) over plain dicts and lists, for ignore rules.

Missing paths are not errors here: an ignore rule for ``/spec/replicas``
applies to objects that have no replicas as well.
"""

from __future__ import annotations

import copy
from typing import Any

_MISSING = object()


def tokens(pointer: str) -> list[str]:
    """``/metadata/annotations/a~1b`` -> ``["metadata", "annotations", "a/b"]``."""
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _step(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        return node.get(token, _MISSING)
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    return _MISSING


def lookup(doc: Any, pointer: str) -> tuple[bool, Any]:
    """``(found, value)`` at ``pointer``."""
    node = doc
    for token in tokens(pointer):
        node = _step(node, token)
        if node is _MISSING:
            return False, None
    return True, node


def without(doc: dict[str, Any], pointers: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``doc`` with the values at ``pointers`` removed."""
    out = copy.deepcopy(doc)
    for pointer in pointers:
        *parents, last = tokens(pointer) or [""]
        found, parent = lookup(out, "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in parents))
        if found and isinstance(parent, dict):
            parent.pop(last, None)
        elif found and isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
            del parent[int(last)]
    return out


def overlay(doc: dict[str, Any], source: dict[str, Any], pointers: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``doc`` where each pointer found in ``source`` takes ``source``'s value.

    Parents missing in ``doc`` are created as mappings; pointers absent from
    ``source`` are removed from ``doc`` (the field is left to whoever owns it).
    """
    out = copy.deepcopy(doc)
    for pointer in pointers:
        found, value = lookup(source, pointer)
        if not found:
            out = without(out, (pointer,))
            continue
        *parents, last = tokens(pointer)
        node: Any = out
        for token in parents:
            node = node.setdefault(token, {}) if isinstance(node, dict) else _step(node, token)
        if isinstance(node, dict):
            node[last] = copy.deepcopy(value)
    return out

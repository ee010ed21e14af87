"""Documents, bounded: the limits every parsed document of a repository is held to, and JSON.

Everything fleetd reads from a repository is held to `Limits`, per document,
so every reader gets the same answer to "what does the worst form of this
input do": a `DocumentError` naming the document, line and problem, in
milliseconds and megabytes, never gigabytes.

- **size**: a document's bytes (``max_document_bytes``), checked before it
  is parsed. Kubernetes stores objects of at most about 1.5 MiB; the
  default, 8 MiB, leaves room for v1 Lists.
- **alias expansion**: YAML aliases are free in the parsed graph but cost
  once per use in every consumer (copying, substitution, JSON). The nodes
  they add are counted on the graph without expanding it (`measure_graph`)
  and bounded (``max_alias_nodes``): a 1 KB "billion laughs" is refused after
  a few thousand steps. A recursive alias (``&a [*a]``) is an error.
- **nodes** after expansion (``max_nodes``) and **nesting depth**
  (``max_depth``): consumers walk objects recursively; Kubernetes objects,
  even large CRD schemas, nest well under 100 levels.

`load_json` reads JSON under the same limits and rules as
`fleetd.util.yamldoc.load_manifests` (duplicate keys and NaN are errors).
YAML itself is parsed only by `fleetd.util.yamldoc`; `measure_graph` works on
its node graphs through their ``value`` and ``start_mark``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one document; see the module docstring."""

    max_document_bytes: int = 8 * MiB
    max_nodes: int = 2_000_000
    max_alias_nodes: int = 100_000
    max_depth: int = 200


DEFAULT_LIMITS = Limits()


class DocumentError(ValueError):
    """A document could not be read; `position` and `problem` say where and why."""

    def __init__(
        self,
        problem: str,
        *,
        document: int,
        line: int | None = None,
        column: int | None = None,
        bound: bool = False,
    ):
        self.problem = problem
        """The parser's or the bound's complaint (may quote a few characters of the input)."""
        self.bound = bound
        """The document is well-formed but over one of the `Limits`."""
        self.document = document
        """1-based index of the document in its stream."""
        self.line = line
        """1-based line in the whole stream, when known."""
        self.column = column
        """1-based column, when known."""
        super().__init__(f"{self.position}: {problem}" if self.position else problem)

    @property
    def position(self) -> str:
        """``line L, column C`` (or less), empty when unknown."""
        parts = [f"line {self.line}"] if self.line is not None else []
        parts += [f"column {self.column}"] if self.column is not None and self.line is not None else []
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed document of a stream."""

    value: Any
    index: int
    """1-based index in the stream (empty documents count)."""
    line: int
    """1-based line where the document's content starts."""
    size: int = 0
    """Bytes of the part of the stream it was parsed from (a measure of the work it was)."""


class GraphNode(Protocol):
    """A node of a composed YAML graph (PyYAML's ``Node``): what `measure_graph` reads."""

    value: Any
    """A scalar's text; a sequence's nodes; a mapping's (key, value) node pairs."""
    start_mark: Any


# --- bounds -----------------------------------------------------------------------------------


def measure_graph(root: GraphNode, limits: Limits, *, index: int, first_line: int) -> bool:
    """Check the graph of one document against `limits`; True when it shares collections (aliases).

    `first_line` is the stream line of `root`, `index` the document's. Iterative
    and memoised per collection node, so an alias costs one lookup however
    large its target: the expanded size is computed, never built.
    """
    weights: dict[int, tuple[int, int]] = {}  # id(collection) -> (expanded nodes, height)
    active: set[int] = {id(root)}
    total, aliased, shared = 1, 0, False
    stack: list[list[Any]] = [[root, iter(_children(root)), 1, 1]]

    def refuse(problem: str, node: GraphNode) -> DocumentError:
        line = first_line - root.start_mark.line + node.start_mark.line
        return DocumentError(
            problem, document=index, line=line, column=node.start_mark.column + 1, bound=True
        )

    while stack:
        frame = stack[-1]
        child = next(frame[1], None)
        if child is None:
            stack.pop()
            active.discard(id(frame[0]))
            weights[id(frame[0])] = (frame[2], frame[3])
            if stack:
                stack[-1][2] += frame[2]
                stack[-1][3] = max(stack[-1][3], frame[3] + 1)
            continue
        if isinstance(child.value, str):  # a scalar
            frame[2] += 1
            total += 1
            frame[3] = max(frame[3], 2)
        elif id(child) in weights:
            weight, height = weights[id(child)]
            shared, aliased = True, aliased + weight
            frame[2] += weight
            frame[3] = max(frame[3], height + 1)
            if aliased > limits.max_alias_nodes:
                raise refuse(bomb(limits), child)
            if len(stack) + height > limits.max_depth:
                raise refuse(too_deep(limits), child)
        elif id(child) in active:
            raise refuse("a recursive alias (an anchor used inside itself); remove it", child)
        else:
            total += 1
            if len(stack) >= limits.max_depth:
                raise refuse(too_deep(limits), child)
            active.add(id(child))
            stack.append([child, iter(_children(child)), 1, 1])
        if total + aliased > limits.max_nodes:
            raise refuse(too_many(limits), child)
    return shared


def _children(node: GraphNode) -> Iterable[GraphNode]:
    if isinstance(node.value, str):
        return ()
    return (part for item in node.value for part in (item if isinstance(item, tuple) else (item,)))


def unshared(value: Any) -> Any:
    """`value` with every container copied, so aliased collections are independent (depth is bounded)."""
    if isinstance(value, dict):
        return {key: unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unshared(item) for item in value]
    return value


def too_large(size: int, limits: Limits, *, index: int, line: int | None = None) -> DocumentError:
    """The refusal of a document of `size` bytes, over ``max_document_bytes``."""
    return DocumentError(
        f"the document is {size_text(size)}, more than the {size_text(limits.max_document_bytes)} "
        "fleetd reads (Kubernetes stores objects of at most about 1.5 MiB); split it",
        document=index,
        line=line,
        bound=True,
    )


def bomb(limits: Limits) -> str:
    return (
        f"its aliases expand to more than {limits.max_alias_nodes} nodes (an alias bomb?); "
        "write repeated parts out instead of aliasing them"
    )


def too_deep(limits: Limits) -> str:
    return f"nests deeper than {limits.max_depth} levels; Kubernetes objects never need that many"


def too_many(limits: Limits) -> str:
    return f"has more than {limits.max_nodes} nodes; split it into several documents"


def size_text(count: int) -> str:
    """``9.0 MiB`` or ``210 bytes``."""
    return f"{count / MiB:.1f} MiB" if count >= MiB else f"{count} bytes"


# --- JSON -------------------------------------------------------------------------------------


def load_json(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Document:
    """The one document of JSON text `data`, held to `limits`; DocumentError if it cannot be."""
    if len(data) > limits.max_document_bytes:
        raise too_large(len(data), limits, index=1)
    try:
        value = json.loads(data, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise DocumentError(e.msg, document=1, line=e.lineno, column=e.colno) from None
    except UnicodeDecodeError as e:
        raise DocumentError(
            f"not UTF-8 text (byte {e.start + 1}); save the file as UTF-8", document=1
        ) from None
    except RecursionError:
        raise DocumentError(too_deep(limits), document=1, bound=True) from None
    except ValueError as e:
        raise DocumentError(str(e), document=1) from None
    _measure_value(value, limits)
    return Document(value, 1, 1, len(data))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} cannot be carried by JSON; quote the value")


def _measure_value(value: Any, limits: Limits) -> None:
    """Depth and node count of parsed JSON (no aliases there), iteratively."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    count = 0
    while pending:
        item, depth = pending.pop()
        count += 1
        if depth > limits.max_depth:
            raise DocumentError(too_deep(limits), document=1, bound=True)
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    if count > limits.max_nodes:
        raise DocumentError(too_many(limits), document=1, bound=True)

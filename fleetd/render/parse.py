"""Parsing manifest bytes into documents, with every failure a located RenderError.

YAML is read as Kubernetes reads it and JSON as JSON, both bounded, by
`fleetd.util.yamldoc` (see there: sizes, aliases, nodes, depth, duplicate
keys, JSON-only values). This module names the file, document, line and
column, and says what to do.

Decrypted text (``secret=True``) is parsed the same way, but its errors give
only the position, never the parser's complaint, which may quote a few
characters of the plaintext.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from fleetd.render.errors import RenderError
from fleetd.util import yamldoc
from fleetd.util.yamldoc import Document

Syntax = Literal["yaml", "json"]


def syntax_of(name: str) -> Syntax:
    """How a manifest file called `name` is parsed: by its extension."""
    return "json" if name.lower().endswith(".json") else "yaml"


def parse(raw: bytes, where: str, syntax: Syntax, *, secret: bool = False) -> Iterator[Document]:
    """Every document of `raw` (a file, or kustomize's output, named `where`), one at a time.

    RenderError when one is unreadable (after the documents before it).
    """
    try:
        if syntax == "json":
            yield yamldoc.load_json(raw)
        else:
            yield from yamldoc.load_manifests(raw)
    except yamldoc.DocumentError as e:
        raise _error(e, where, syntax, secret) from None


def _error(error: yamldoc.DocumentError, where: str, syntax: Syntax, secret: bool) -> RenderError:
    name = syntax.upper()
    if secret:
        position = f" at {error.position}" if error.position else ""
        message = (
            f"the decrypted content is not valid {name}{position} (of the decrypted text; the parser's "
            "message is withheld as it may quote secret values) — check it with `sops --decrypt`"
        )
        return RenderError(message, file=where, document=error.document)
    column = f" (column {error.column})" if error.column is not None else ""
    problem = f"{error.problem}{column}" if error.bound else f"invalid {name}: {error.problem}{column}"
    return RenderError(problem, file=where, document=error.document, line=error.line)

"""Variables: per-cluster ``${name}`` substitution into rendered objects (like Flux's post-build).

After building, every *string value* (never a key) of every object is
scanned for ``${name}``, ``${name:=default}`` or ``${name:-default}``; the
default applies when the variable is undefined or empty. ``$${name}`` is a
literal ``${name}``. Names match ``[A-Za-z_][A-Za-z0-9_]*``; other text,
including ``$name`` without braces, is left alone. Working on parsed values
means a value can never break the YAML structure and a whole-scalar value
stays a string (``"${replicas}"`` does not become a number).

Substitution is strict: an undefined variable without a default fails the
render, naming the file, the object and every undefined variable of that
object. An object annotated ``fleetd.dev/substitute: disabled`` is left
untouched (scripts full of ``${HOME}``).

Decrypted values are never substituted: a string value containing one of
the object's `fleetd.render.model.Rendered.verbatim` texts (decrypted texts
holding a ``$``) is applied exactly as it is, and is never named in a
message.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from fleetd.render.model import Rendered
from fleetd.util.heap import Settler

SUBSTITUTE_ANNOTATION = "fleetd.dev/substitute"

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[=-])([^}]*))?\}")


def substituted(rendered: Rendered, variables: Mapping[str, str], settler: Settler | None = None) -> Rendered:
    """`rendered` with variables substituted into its string values; never mutates it.

    Copy-on-write: the result's top-level mapping and ``metadata`` are new
    (the target namespace goes there), and so is every container on the way
    to a substituted string; everything else is shared with `rendered`, which
    the read-only contract of render results allows. New containers are
    counted to `settler` (see `fleetd.util.heap`).
    """
    annotations = rendered.obj["metadata"].get("annotations")
    substitution = _Substitution(variables, rendered.verbatim)
    if isinstance(annotations, dict) and annotations.get(SUBSTITUTE_ANNOTATION) == "disabled":
        obj = rendered.obj
    else:
        obj = substitution.value(rendered.obj)
        if substitution.undefined:
            raise rendered.error(_undefined_message(sorted(substitution.undefined)))
    obj = dict(obj) if obj is rendered.obj else obj
    if obj["metadata"] is rendered.obj["metadata"]:
        obj["metadata"] = dict(obj["metadata"])
    if settler is not None:
        settler.made(substitution.copied + 2)
    return dataclasses.replace(rendered, obj=obj)


class _Substitution:
    """One object's substitution: the variables, the texts to leave alone, the undefined names seen."""

    __slots__ = ("_variables", "_verbatim", "copied", "undefined")

    def __init__(self, variables: Mapping[str, str], verbatim: frozenset[str]) -> None:
        self._variables, self._verbatim = variables, verbatim
        self.undefined: set[str] = set()
        """Names of undefined variables without a default."""
        self.copied = 0
        """Containers copied so far."""

    def value(self, value: Any) -> Any:
        """`value` substituted: the same object when nothing in it changes (depth is bounded by parsing)."""
        if isinstance(value, str):
            return self._text(value) if "${" in value else value
        if isinstance(value, dict):
            changed: dict[str, Any] | None = None
            for key, item in value.items():
                new = self.value(item)
                if new is not item:
                    changed = changed if changed is not None else self._copy(value)
                    changed[key] = new
            return value if changed is None else changed
        if isinstance(value, list):
            replaced: list[Any] | None = None
            for index, item in enumerate(value):
                new = self.value(item)
                if new is not item:
                    replaced = replaced if replaced is not None else self._copy(value)
                    replaced[index] = new
            return value if replaced is None else replaced
        return value

    def _copy(self, container: Any) -> Any:
        self.copied += 1
        return container.copy()

    def _text(self, text: str) -> str:
        if self._verbatim and any(secret in text for secret in self._verbatim):
            return text
        return _VARIABLE.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        escaped, name, operator, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        value = self._variables.get(name)
        if operator and not value:
            return str(default)
        if value is None:
            self.undefined.add(name)
            return match.group(0)
        return value


def _undefined_message(names: list[str]) -> str:
    listed = ", ".join(f"${{{name}}}" for name in names)
    plural = "s" if len(names) > 1 else ""
    return (
        f"undefined variable{plural} {listed} — define {'them' if plural else 'it'} in the cluster's "
        f"[variables] or give a default: ${{{names[0]}:=<default>}} (write $${{{names[0]}}} for a "
        f"literal ${{{names[0]}}}, or annotate the object {SUBSTITUTE_ANNOTATION}: disabled)"
    )

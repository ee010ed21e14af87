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

import copy
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from fleetd.render.model import Rendered
from fleetd.util.heap import Settler

SUBSTITUTE_ANNOTATION = "fleetd.dev/substitute"

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[=-])([^}]*))?\}")


def substituted(rendered: Rendered, variables: Mapping[str, str], settler: Settler | None = None) -> Rendered:
    """A copy of `rendered` with variables substituted into its string values; never mutates it.

    The copy's containers are counted to `settler` (see `fleetd.util.heap`).
    """
    annotations = rendered.obj["metadata"].get("annotations")
    if isinstance(annotations, dict) and annotations.get(SUBSTITUTE_ANNOTATION) == "disabled":
        return dataclasses.replace(rendered, obj=copy.deepcopy(rendered.obj))
    undefined: set[str] = set()
    substitution = _Substitution(variables, rendered.verbatim, undefined)
    obj = substitution.value(rendered.obj)
    if undefined:
        raise rendered.error(_undefined_message(sorted(undefined)))
    if settler is not None:
        settler.made(substitution.copied)
    return dataclasses.replace(rendered, obj=obj)


class _Substitution:
    """One object's substitution: the variables, the texts to leave alone, the undefined names seen."""

    __slots__ = ("_undefined", "_variables", "_verbatim", "copied")

    def __init__(self, variables: Mapping[str, str], verbatim: frozenset[str], undefined: set[str]) -> None:
        self._variables, self._verbatim, self._undefined = variables, verbatim, undefined
        self.copied = 0
        """Containers copied so far."""

    def value(self, value: Any) -> Any:
        """A copy of `value` substituted (containers are always copied; depth is bounded by parsing)."""
        if isinstance(value, str):
            return self._text(value) if "${" in value else value
        if isinstance(value, dict):
            self.copied += 1
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            self.copied += 1
            return [self.value(item) for item in value]
        return value

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
            self._undefined.add(name)
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

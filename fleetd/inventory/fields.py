"""Typed reads from parsed TOML that record problems instead of raising.

The loader must report every problem of a load at once, so nothing here
raises on bad input: each read checks the value, records a located `Problem`
when it is wrong, and hands back a safe stand-in (the default, or None) so
that reading goes on and later keys get checked too. Callers build the model
from whatever came back and throw it away if any problem was recorded.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from fleetd.errors import Problem
from fleetd.inventory.locate import KeyPath, LineIndex, render_key
from fleetd.inventory.syntax import Check
from fleetd.util.durations import DurationError, parse_duration

T = TypeVar("T")

_KIND_NAMES: dict[type, str] = {
    str: "a string",
    bool: "a boolean (true or false)",
    int: "an integer",
    list: "an array",
    dict: "a table",
}


def describe(value: object) -> str:
    """Name a TOML value for a message: 'a string "yes"', 'an integer (3)', 'a table'."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"{'an integer' if isinstance(value, int) else 'a float'} ({value})"
    if isinstance(value, str):
        return f"a string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, dt.date | dt.time):
        return "a date/time"
    return "an array" if isinstance(value, list) else "a table"


def _is_a(value: object, kind: type) -> bool:
    # TOML booleans are Python bools, which are ints too: never accept one for an int.
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


@dataclass(slots=True, kw_only=True)
class Document:
    """One parsed TOML file and the problem list shared by the whole load."""

    file: Path
    """The file as the user would name it (for messages)."""
    lines: LineIndex
    problems: list[Problem]

    def report(self, path: KeyPath, message: str) -> None:
        """Record a problem at `path`, placed on its line when it can be found."""
        line = self.lines.line_of(path)
        problem = Problem(file=self.file, key=render_key(path), line=line, message=message)
        if problem not in self.problems:
            self.problems.append(problem)

    def root(self, data: Mapping[str, Any], known: Collection[str]) -> Table:
        """The top-level table, checked for unknown keys."""
        return Table(self, data, (), known)


class Table:
    """A TOML table under reading: typed getters and an unknown-key check."""

    __slots__ = ("data", "doc", "path", "stand_in")

    def __init__(
        self,
        doc: Document,
        data: Mapping[str, Any],
        path: KeyPath,
        known: Collection[str],
        *,
        stand_in: bool = False,
        misplaced: Mapping[str, str] | None = None,
    ) -> None:
        self.doc = doc
        self.data = data
        self.path = path
        # An empty table standing in for a mistyped one: its missing keys were reported already.
        self.stand_in = stand_in
        for key in data:
            if misplaced and key in misplaced:
                self.report(key, misplaced[key])
            elif key not in known:
                self.report(key, _unknown_key_message(key, known))

    def report(self, key: str | int | None, message: str) -> None:
        """Record a problem at `key` of this table (None: the table itself)."""
        self.doc.report(self.path if key is None else (*self.path, key), message)

    def get(self, key: str, kind: type[T]) -> T | None:
        """The value of `key` if present and of `kind`; None (and a problem if mistyped) otherwise."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not _is_a(value, kind):
            self.report(key, f"expected {_KIND_NAMES[kind]}, got {describe(value)}")
            return None
        return cast(T, value)

    def require(self, key: str, kind: type[T], hint: str) -> T | None:
        """Like `get`, but a missing key is a problem; `hint` shows how to write it."""
        if key not in self.data and not self.stand_in:
            self.report(None, f"missing required key '{key}' (add e.g. {hint})")
        return self.get(key, kind)

    def text(self, key: str, check: Check | None = None, *, required: str | None = None) -> str | None:
        """A string value, also run through `check`; `required` is the hint if it must be present."""
        value = self.get(key, str) if required is None else self.require(key, str, required)
        error = None if value is None or check is None else check(value)
        if error is not None:
            self.report(key, error)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean, or `default` when absent or mistyped."""
        value = self.get(key, bool)
        return default if value is None else value

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        """An integer >= `minimum`, or `default` when absent or wrong."""
        value = self.get(key, int)
        if value is not None and value < minimum:
            self.report(key, f"must be at least {minimum}, got {value}")
            return default
        return default if value is None else value

    def duration(self, key: str, default: float) -> float:
        """A positive Go-style duration in seconds, or `default` when absent or wrong."""
        raw = self.data.get(key)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            self.report(key, f'expected a duration string such as "5m", got {describe(raw)}')
            return default
        value = self.get(key, str)
        try:
            seconds = default if value is None else parse_duration(value)
        except DurationError as error:
            self.report(key, str(error))
            return default
        if seconds <= 0:
            self.report(key, "must be greater than zero (e.g. 30s)")
            return default
        return seconds

    def table(self, key: str, known: Collection[str]) -> Table | None:
        """The sub-table `key`, or None when absent or not a table."""
        value = self.get(key, dict)
        return None if value is None else Table(self.doc, value, (*self.path, key), known)

    def tables(
        self, key: str, known: Collection[str], misplaced: Mapping[str, str] | None = None
    ) -> list[Table]:
        """The elements of the array of tables `key` (``[[key]]``); wrong elements are reported.

        `misplaced` maps keys that belong elsewhere to the message explaining where.
        """
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.report(key, f"expected an array of tables ([[{key}]] sections), got {describe(value)}")
            return []
        found = []
        for index, element in enumerate(value):
            if isinstance(element, dict):
                found.append(Table(self.doc, element, (*self.path, key, index), known, misplaced=misplaced))
            else:
                self.report(key, f"element {index}: expected a table, got {describe(element)}")
        return found

    def strings(self, key: str, check: Check | None = None) -> tuple[str, ...] | None:
        """An array of strings, each run through `check`; None when absent or not an array."""
        value = self.get(key, list)
        if value is None:
            return None
        good: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                error: str | None = f"expected a string, got {describe(item)}"
            else:
                error = check(item) if check else None
            if error is None:
                good.append(item)
            else:
                self.doc.report((*self.path, key, index), error)
        return tuple(good)

    def string_map(self, key: str, check_key: Check, check_value: Check) -> dict[str, str]:
        """A table of string -> string; bad keys or values are reported and dropped."""
        value = self.get(key, dict)
        good: dict[str, str] = {}
        for name, item in (value or {}).items():
            error = check_key(name) or (
                _not_a_string(item) if not isinstance(item, str) else check_value(item)
            )
            if error is None:
                good[name] = item
            else:
                self.doc.report((*self.path, key, name), error)
        return good


def _not_a_string(item: object) -> str:
    """Say a map value must be a string; scalars get the quoted form to write instead."""
    if isinstance(item, bool | int | float):
        quoted = json.dumps(str(item).lower() if isinstance(item, bool) else str(item))
        return f"expected a string, got {describe(item)} (quote it: {quoted})"
    return f"expected a string, got {describe(item)}"


def _unknown_key_message(key: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    if not known:
        return f"unknown key '{key}' (this table takes no keys)"
    return f"unknown key '{key}' (expected one of: {', '.join(sorted(known))})"

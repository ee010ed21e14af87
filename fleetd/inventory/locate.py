"""Find the line where a key is defined in TOML source text.

tomllib returns plain dicts without positions, so a semantic problem (a bad
duration, an unknown key) could otherwise only be named, not placed. This is
a best-effort second pass over text tomllib already accepted: it follows
``[table]`` and ``[[array]]`` headers (counting array elements, so
``syncs[1].ignore[0]`` is found) and records the line of every key. Values
that span lines and inline tables are attributed to the line of their key.
It never raises; a key it cannot place falls back to the nearest enclosing
table that it can, then to no line at all.
"""

from __future__ import annotations

import re

KeyPath = tuple[str | int, ...]
"""Path to a value: table keys (str) and array indexes (int), e.g. ("syncs", 0, "name")."""

_BARE = r"[A-Za-z0-9_-]+"
_PART = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_PART}(?:[ \t]*\.[ \t]*{_PART})*"
_HEADER = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*\]")
_KEY = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")
_PART_RE = re.compile(_PART)
_BARE_RE = re.compile(_BARE)


def render_key(path: KeyPath) -> str:
    """Render a key path for messages: ``syncs[0].ignore[1].paths``, quoting odd keys."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if _BARE_RE.fullmatch(part) else f'"{part}"'
            text += f".{name}" if text else name
    return text


def _split_dotted(text: str) -> list[str]:
    return [part[1:-1] if part[0] in "\"'" else part for part in _PART_RE.findall(text)]


class _Scanner:
    """Tracks what the next line starts inside of: brackets and multi-line strings."""

    __slots__ = ("depth", "quote")

    def __init__(self) -> None:
        self.depth = 0
        self.quote: str | None = None  # an open multi-line string delimiter

    @property
    def at_statement(self) -> bool:
        """Whether the next line can begin a header or a key."""
        return self.depth == 0 and self.quote is None

    def feed(self, text: str) -> None:
        """Consume `text`, updating bracket depth and open-string state."""
        i = 0
        while i < len(text):
            i = self._close(text, i) if self.quote else self._step(text, i)

    def _close(self, text: str, i: int) -> int:
        assert self.quote is not None
        if self.quote == '"""' and text[i] == "\\":
            return i + 2
        if text.startswith(self.quote, i):
            self.quote = None
            return i + 3
        return i + 1

    def _step(self, text: str, i: int) -> int:
        char = text[i]
        if char == "#":
            return len(text)
        if text.startswith(('"""', "'''"), i):
            self.quote = text[i : i + 3]
            return i + 3
        if char in "\"'":
            return _skip_string(text, i)
        self.depth += (char in "[{") - (char in "]}")
        return i + 1


def _skip_string(text: str, i: int) -> int:
    quote, i = text[i], i + 1
    while i < len(text) and text[i] != quote:
        i += 2 if quote == '"' and text[i] == "\\" else 1
    return i + 1


class LineIndex:
    """Key path -> 1-based line number, built from TOML source text."""

    __slots__ = ("_counts", "_lines", "_table")

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._counts: dict[KeyPath, int] = {}  # elements seen per array of tables
        self._table: KeyPath = ()
        scanner = _Scanner()
        for number, line in enumerate(text.splitlines(), start=1):
            rest = self._statement(line, number) if scanner.at_statement else line
            scanner.feed(rest)

    def line_of(self, path: KeyPath) -> int | None:
        """The line defining `path`, else that of its nearest placed ancestor, else None."""
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return None

    def _statement(self, line: str, number: int) -> str:
        """Record a header or key on `line`; return the part holding a value, if any."""
        header = _HEADER.match(line)
        if header is not None:
            self._table = self._resolve(_split_dotted(header[2]), array=header[1] == "[[")
            self._record(self._table, number, start=0)
            return line[header.end() :].lstrip("]")
        key = _KEY.match(line)
        if key is None:
            return line
        self._record((*self._table, *_split_dotted(key[1])), number, start=len(self._table))
        return line[key.end() :]

    def _resolve(self, parts: list[str], *, array: bool) -> KeyPath:
        path: KeyPath = ()
        for i, part in enumerate(parts):
            path = (*path, part)
            if array and i == len(parts) - 1:
                index = self._counts.get(path, 0)
                self._counts[path] = index + 1
                path = (*path, index)
            elif path in self._counts:
                path = (*path, self._counts[path] - 1)
        return path

    def _record(self, path: KeyPath, number: int, *, start: int) -> None:
        for end in range(max(start, 1), len(path) + 1):
            self._lines.setdefault(path[:end], number)

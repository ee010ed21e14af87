"""Go-style durations ("500ms", "30s", "5m", "1h30m") as float seconds.

The inventory speaks the duration syntax Flux, Argo CD and Kubernetes users
already write. A bare number is refused (seconds? minutes?) except "0", which
means the same in every unit. There is deliberately no day unit, as in Go:
a "day" is not always 24 hours, so "24h" says exactly what it means.
"""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # MICRO SIGN, as Go accepts
    "μs": 1e-6,  # GREEK SMALL LETTER MU, as Go accepts
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Longest units first so that "ms" is not read as "m" followed by garbage.
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_HINT = "use a number with a unit: 500ms, 30s, 5m, 1h"


class DurationError(ValueError):
    """A duration string that fleetd cannot read; the message says how to fix it."""


def parse_duration(text: str) -> float:
    """Return the number of seconds `text` denotes; raise DurationError otherwise."""
    if text == "0":
        return 0.0
    if text.startswith("-"):
        raise DurationError(f"invalid duration {text!r} (must not be negative)")
    total, pos = 0.0, 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise DurationError(f"invalid duration {text!r} ({_hint_for(text)})")
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    if pos == 0:
        raise DurationError(f"invalid duration {text!r} ({_HINT})")
    return total


def _hint_for(text: str) -> str:
    if re.fullmatch(r"\d+(\.\d+)?d", text):
        return "there is no day unit; write hours, e.g. 24h"
    return _HINT


def format_duration(seconds: float) -> str:
    """Render seconds the way a user would write them: 90 -> "1m30s", 0.5 -> "500ms"."""
    if seconds <= 0:
        return "0"
    if seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{int(hours)}h" if hours else "", f"{int(minutes)}m" if minutes else ""]
    parts.append(f"{round(secs, 3):g}s" if secs else "")
    return "".join(parts)

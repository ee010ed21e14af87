"""Secrets of notification targets, read from files; never shown.

A `Credential` keeps the file's content without surrounding whitespace.
Its repr and str hide the value, and errors name the file and the fix,
never the content, so nothing in a log line or a message can carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fleetd.errors import FleetdError


class CredentialError(FleetdError):
    """A target's credential file is missing, unreadable or empty."""


@dataclass(frozen=True, slots=True)
class Credential:
    """A token, key or URL list read from a file; ``repr`` never shows it."""

    value: str = field(repr=False)
    path: Path

    def __str__(self) -> str:
        return f"<credential from {self.path}>"

    @classmethod
    def read(cls, path: Path, what: str) -> Credential:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CredentialError(
                f"{what} file {path}: cannot be read ({reason}); check the path and permissions"
            ) from exc
        if not value:
            raise CredentialError(f"{what} file {path}: is empty; write the {what} into it")
        return cls(value, path)

    def lines(self) -> list[str]:
        """Non-empty lines that are not ``#`` comments (a file of apprise URLs)."""
        stripped = (line.strip() for line in self.value.splitlines())
        return [line for line in stripped if line and not line.startswith("#")]

"""Read a test-bed API server's audit log (``testbed/audit-policy.yaml``): who wrote what, and when."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One audited request that completed."""

    user: str
    verb: str
    uri: str
    resource: str
    namespace: str
    name: str
    code: int
    received: float
    """Unix time the server received it (the bed's API servers share this machine's clock)."""
    body: dict[str, Any] | None

    @property
    def dry_run(self) -> bool:
        return "dryRun=" in self.uri

    @property
    def write(self) -> bool:
        """A write that changed (or tried to change) the cluster: no dry run, no read."""
        return self.verb in WRITE_VERBS and not self.dry_run


def requests(log: Path, *, since: float = 0.0) -> list[Request]:
    """Every completed request in ``log`` received at or after ``since`` (Unix time)."""
    found = []
    text = log.read_text() if log.exists() else ""
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if event.get("stage") != "ResponseComplete":
            continue
        ref = event.get("objectRef") or {}
        received = _time(event.get("requestReceivedTimestamp", ""))
        if received < since:
            continue
        found.append(
            Request(
                user=str((event.get("user") or {}).get("username", "")),
                verb=str(event.get("verb", "")),
                uri=str(event.get("requestURI", "")),
                resource=str(ref.get("resource", "")),
                namespace=str(ref.get("namespace", "")),
                name=str(ref.get("name", "")),
                code=int((event.get("responseStatus") or {}).get("code", 0)),
                received=received,
                body=event.get("requestObject"),
            )
        )
    return found


def writes(log: Path, *, since: float = 0.0, users: frozenset[str] | None = None) -> list[Request]:
    """The real writes (no dry runs) of ``users`` (default: anyone) since ``since``."""
    return [r for r in requests(log, since=since) if r.write and (users is None or r.user in users)]


def _time(text: str) -> float:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0

"""fleetd's own exceptions.

Every error fleetd raises on purpose derives from one root, so the daemon can
tell "fleetd refused something, with a message for the operator" apart from a
bug. Third-party errors are translated where their library enters fleetd and
chained with ``raise ... from``. The tree, which other stages extend::

    FleetdError             anything fleetd raises on purpose
     ├── InventoryError     the TOML inventory is unreadable or invalid;
     │                      carries every Problem found in one load
     ├── KubeError          (fleetd.kube.client) one cluster's API failed
     ├── SourceError        (fleetd.source) fetching the repository failed
     ├── RenderError        (fleetd.render) a sync's files cannot be rendered
     └── StoreError         (fleetd.daemon.store) the state directory cannot be written

Retry semantics travel with the error, as in kopf: ``temporary`` says
whether trying the same thing again later may succeed without anyone
changing an input (a refused connection, a 429, a 5xx), and
``retry_after`` is the delay the other side asked for, if any. Permanent
errors are retried too (the input may be fixed at any moment), but only on
the normal back-off, and their message says what to change.

A `Problem` is one located complaint (file, key, line, what to do), kept as
data so that the CLI, the status API and logs can each render it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class FleetdError(Exception):
    """Root of every error fleetd raises on purpose."""

    #: Whether retrying later may succeed with no input changed.
    temporary: bool = False
    #: Seconds the other side asked us to wait before retrying (e.g. ``Retry-After``), if any.
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong with an input file, located as precisely as possible."""

    file: Path
    """The file at fault, as the user named it (relative paths stay relative)."""
    key: str
    """Dotted key path such as ``syncs[0].interval``; empty for file-level problems."""
    line: int | None
    """1-based line of the key in `file`, or None when it cannot be placed."""
    message: str
    """What is wrong and what to do about it."""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class InventoryError(FleetdError):
    """The inventory could not be loaded; `problems` lists every reason found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))

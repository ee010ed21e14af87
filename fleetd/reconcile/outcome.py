"""What one reconcile of one sync returns: a typed result, never a side effect.

The reconciler computes, the fleet state records (`fleetd.daemon.state`).
`SyncOutcome` is everything the recorder needs: the result as an enum, the
counts, the error with its object references, and — for a failed apply —
exactly which objects were written before the failure, so status never
says "nothing was applied" when something was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fleetd.reconcile.ledger import Ledger


class Result(StrEnum):
    """How a sync stands on a cluster."""

    READY = "ready"
    """Applied at its revision (and healthy, when the sync waits for health)."""
    FAILED = "failed"
    """The last attempt failed; the error says where and what to do."""
    WAITING = "waiting"
    """Held back by `depends_on` until its dependencies are ready at the same revision."""
    SUSPENDED = "suspended"
    """Suspended in the inventory or by an operator: nothing is applied or corrected."""
    HELD = "held"
    """Applied, but a prune larger than the deletion budget waits for an operator."""
    PENDING = "pending"
    """Never reconciled yet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncOutcome:
    """The result of one reconcile of one sync on one cluster."""

    sync: str
    revision: str
    result: Result
    objects: int = 0
    changed: int = 0
    pruned: int = 0
    error: str | None = None
    duration: float = 0.0
    stage: str | None = None
    """Where it failed: render, plan, apply, prune, ledger, health (None when it did not)."""
    written: tuple[str, ...] = ()
    """Objects a failed reconcile wrote before failing (``Kind ns/name``)."""
    refs: tuple[str, ...] = ()
    """The objects it is about (``Kind ns/name``): what a failure names, what a success wrote or pruned."""
    ledger: Ledger | None = None
    """The ledger as the spoke now holds it (the recorder keeps a local copy)."""
    warnings: tuple[str, ...] = ()
    """What the render warned about (plaintext Secrets in git), kept in status."""
    swept: bool = False
    """Every object was dry-run (not vouched for by the watches)."""

"""Commit statuses: per cluster and sync, where a commit converged, failed or waits for its wave.

Pure planning; the forges' APIs are in `fleetd.notify.forges`. Each
(cluster, sync) is one status context, ``<prefix>/<cluster>/<sync>``
(``fleetd/pi5/apps``), on the commit the event names:

=====================  ===============================================
event                  status of the contexts it concerns
=====================  ===============================================
reconcile.succeeded    success (applied, object counts)
reconcile.failed       failure (the first line of the error)
prune.held             pending (applied; a prune waits for an operator)
sync.waiting           pending (waiting for depends_on)
sync.suspended         pending (suspended: nothing applied)
source.revision        pending for every cluster: "rolling out" where
                       the cluster's wave may apply the commit,
                       "waiting for wave N" where it may not yet
rollout.advanced       pending "rolling out" for the waves that now may
rollout.halted/held    pending "held back" for the waves that may not
=====================  ===============================================

`Latest` remembers what each (commit, context) was last given, so a state
is sent only when it changes (a pending also when its reason changes), and
a pending never replaces a success or a failure of the same commit (the
events of a fast reconcile may overtake the rollout's). The rollout is read
through the small `RolloutView`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Protocol

from fleetd.daemon.events import Event, EventKind
from fleetd.inventory import Cluster

State = Literal["pending", "success", "failure"]
#: GitHub cuts descriptions at 140 characters.
MAX_DESCRIPTION = 140
#: (commit, context) pairs remembered.
MEMORY = 20_000


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitStatus:
    """One status for one context on one commit."""

    sha: str
    context: str
    state: State
    description: str
    cluster: str
    sync: str
    target_url: str | None = None


class RolloutView(Protocol):
    """What the planner reads of the fleet: clusters and which revision each wave may apply."""

    def clusters(self) -> tuple[Cluster, ...]: ...
    def allowed(self, wave: int) -> str | None: ...
    def halted_at(self) -> int | None: ...
    def held(self) -> bool: ...


def plan(
    event: Event, view: RolloutView, *, prefix: str, target_url: str | None = None
) -> list[CommitStatus]:
    """The statuses `event` implies (before `Latest` filters out what did not change)."""

    def status(cluster: str, sync: str, state: State, text: str, sha: str) -> CommitStatus:
        return CommitStatus(
            sha=sha, context=f"{prefix}/{cluster}/{sync}", state=state, description=_short(text),
            cluster=cluster, sync=sync, target_url=target_url,
        )  # fmt: skip

    sha, kind = event.revision, event.kind
    if sha is None:
        return []
    if event.cluster and event.sync:
        single = _single(kind, event.message)
        return [status(event.cluster, event.sync, *single, sha)] if single else []
    if kind not in (EventKind.SOURCE_REVISION, EventKind.ROLLOUT_ADVANCED, EventKind.ROLLOUT_HALTED):
        return []
    found = []
    for cluster in view.clusters():
        allowed = view.allowed(cluster.wave) == sha
        if kind is EventKind.ROLLOUT_HALTED and allowed:
            continue
        text = (
            "rolling out: this cluster's wave applies the commit" if allowed else _waiting(cluster, view, sha)
        )
        found += [status(cluster.name, s.name, "pending", text, sha) for s in cluster.syncs if not s.suspend]
    return found


def _single(kind: EventKind, message: str) -> tuple[State, str] | None:
    first = message.strip().splitlines()[0] if message.strip() else ""
    return {
        EventKind.RECONCILE_SUCCEEDED: ("success", f"applied: {first.split(',')[0]}"),
        EventKind.RECONCILE_FAILED: ("failure", f"failed: {first}"),
        EventKind.PRUNE_HELD: ("pending", f"applied; prune held for an operator: {first}"),
        EventKind.SYNC_WAITING: ("pending", f"waiting: {first}"),
        EventKind.SYNC_SUSPENDED: ("pending", "suspended: nothing is applied"),
    }.get(kind)  # type: ignore[return-value]


def _waiting(cluster: Cluster, view: RolloutView, sha: str) -> str:
    halted = view.halted_at()
    if halted is not None and halted < cluster.wave:
        return f"held back: wave {halted} failed at {sha[:12]}; later waves wait (fleetd rollout promote)"
    if view.held():
        return f"held back: the rollout is held by an operator (wave {cluster.wave} waits)"
    return f"waiting for rollout wave {cluster.wave}: earlier waves must be ready at {sha[:12]} first"


def _short(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


class Latest:
    """The last state sent per (commit, context); decides what is worth sending."""

    def __init__(self) -> None:
        self._sent: OrderedDict[tuple[str, str], tuple[State, str]] = OrderedDict()

    def changed(self, status: CommitStatus) -> bool:
        """Whether to send `status`; records it when so."""
        key = (status.sha, status.context)
        last = self._sent.get(key)
        if (
            last is not None
            and last[0] == status.state
            and (status.state != "pending" or last[1] == status.description)
        ):
            return False  # a repeated success or failure is not news, whatever its counts or wording
        if last is not None and last[0] != "pending" and status.state == "pending":
            return False
        self._sent[key] = (status.state, status.description)
        self._sent.move_to_end(key)
        while len(self._sent) > MEMORY:
            self._sent.popitem(last=False)
        return True

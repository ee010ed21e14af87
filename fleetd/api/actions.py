"""Operator actions from the web: which exist, what they need, and how each is recorded with who asked.

Pure, apart from calling the daemon (`fleetd.api.inspect.Live`). The HTTP
layer has already decided that the caller may act (`fleetd.api.auth`);
here the request is checked against the inventory, recorded as an
``operator.action`` event naming who asked and from where, and only then
handed to the daemon, which records what it did in events of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fleetd.api.inspect import Live
from fleetd.api.v1 import Problem, find
from fleetd.daemon.state import FleetState

#: verb -> (needs a cluster, may name a sync, what it does in words)
VERBS: Final = {
    "reconcile": (False, True, "reconcile"),
    "suspend": (True, True, "suspend"),
    "resume": (True, True, "resume"),
    "rollout-hold": (False, False, "hold the rollout"),
    "rollout-resume": (False, False, "resume the rollout"),
    "rollout-promote": (False, False, "promote the rollout to the next wave"),
}


@dataclass(frozen=True, slots=True)
class Action:
    verb: str
    cluster: str | None = None
    sync: str | None = None

    @property
    def target(self) -> str:
        if self.cluster is None:
            return "" if self.verb.startswith("rollout-") else " of the fleet"
        return f" of {self.cluster}{'/' + self.sync if self.sync else ''}"

    def describe(self) -> str:
        return f"{VERBS[self.verb][2]}{self.target}"


def parse(state: FleetState, verb: str, cluster: str | None, sync: str | None) -> Action:
    """The action asked for, checked against the inventory; `Problem` (400/404) otherwise."""
    if verb not in VERBS:
        raise Problem(404, f"unknown action {verb!r} (actions: {', '.join(VERBS)})")
    needs_cluster, takes_sync, _ = VERBS[verb]
    cluster, sync = cluster or None, sync or None
    if needs_cluster and cluster is None:
        raise Problem(400, f"{verb} needs a cluster")
    if not takes_sync and (cluster or sync):
        raise Problem(400, f"{verb} acts on the whole rollout; name no cluster or sync")
    if sync is not None and cluster is None:
        raise Problem(400, "name the cluster of the sync")
    if cluster is not None:
        find(state, cluster, sync)
    return Action(verb, cluster, sync)


def perform(state: FleetState, live: Live, action: Action, *, who: str, origin: str) -> str:
    """Record who asked, then act; returns the message for the caller."""
    calls: dict[str, Callable[[], None]] = {
        "reconcile": lambda: live.trigger(action.cluster, action.sync),
        "suspend": lambda: live.suspend(action.cluster or "", action.sync),
        "resume": lambda: live.resume_sync(action.cluster or "", action.sync),
        "rollout-hold": live.hold,
        "rollout-resume": live.resume,
        "rollout-promote": live.promote,
    }
    state.operator(
        f"{who} asked to {action.describe()} (web, from {origin})", cluster=action.cluster, sync=action.sync
    )
    calls[action.verb]()
    return f"{action.describe()}: requested by {who}"

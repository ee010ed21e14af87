"""Deduplication and rate limiting: the same failure once, its recovery once, never a storm.

Pure, with the clock handed in, so every rule is tested without waiting.

**Failures** are the event kinds in `PROBLEMS`. Each opens a *problem* keyed
by its family, cluster and sync (``reconcile.failed`` on pi5/apps is one
problem however its message changes from attempt to attempt). The first
event of a problem is sent; repeats within the rule's dedup window are
suppressed; one after the window is sent again as "still failing", with the
number of repeats that were held back.

**Recoveries** are the kinds in `RECOVERIES`: one closes the open problems
it answers (``reconcile.succeeded`` closes the sync's failure and its held
prune), and a recovery message is sent only if the failure was sent. A
recovery needs no selection of its own: it follows the failure it answers.

**Other events** (drift, operator actions, revisions, ...) are sent once
per window for the same kind, cluster, sync, revision and objects.

**Rate limit**: a token bucket of N messages per period per rule; what it
holds back is counted and mentioned in the next message that goes out.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum

from fleetd.daemon.events import Event, EventKind
from fleetd.inventory import Notification
from fleetd.notify.rules import about, selects

#: Failure kinds and the family their problem belongs to.
PROBLEMS: dict[EventKind, str] = {
    EventKind.RECONCILE_FAILED: "sync",
    EventKind.PRUNE_HELD: "prune",
    EventKind.CLUSTER_UNREACHABLE: "cluster",
    EventKind.SOURCE_FAILED: "source",
    EventKind.ROLLOUT_HALTED: "rollout",
    EventKind.INVENTORY_REJECTED: "inventory",
    EventKind.STATE_UNRECORDED: "state",
}
#: Kinds that clear problems, and the families they clear.
RECOVERIES: dict[EventKind, tuple[str, ...]] = {
    EventKind.RECONCILE_SUCCEEDED: ("sync", "prune"),
    EventKind.OBJECTS_PRUNED: ("prune",),
    EventKind.CLUSTER_RECOVERED: ("cluster",),
    EventKind.SOURCE_REVISION: ("source",),
    EventKind.ROLLOUT_ADVANCED: ("rollout",),
    EventKind.INVENTORY_RELOADED: ("inventory",),
    EventKind.STATE_RECORDED: ("state",),
}
#: Plain events remembered for deduplication before the oldest are forgotten.
MEMORY = 10_000


class Reason(StrEnum):
    """Why a message is sent."""

    FAILURE = "failure"
    STILL_FAILING = "still_failing"
    RECOVERY = "recovery"
    EVENT = "event"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What to do with one event: send it (with `reason`), or hold it back (`suppressed`)."""

    reason: Reason | None = None
    suppressed: bool = False
    since: float | None = None
    """Unix time the problem began (still failing, recovery)."""
    repeats: int = 0
    """Repeats of the problem that were held back."""


@dataclass(slots=True)
class _Problem:
    first: float
    """Unix time of its first event."""
    sent: float
    """Monotonic time it was last sent."""
    repeats: int = 0


class Gate:
    """One rule's memory of open problems and recent events; see the module docstring."""

    def __init__(self, rule: Notification) -> None:
        self.rule = rule
        self._open: dict[tuple[str, str | None, str | None], _Problem] = {}
        self._seen: dict[Hashable, float] = {}

    def decide(self, event: Event, now: float) -> Verdict | None:
        """The verdict for `event` at monotonic time `now`; None when the rule is not concerned at all."""
        family = PROBLEMS.get(event.kind)
        if family is not None:
            return self._problem(family, event, now) if selects(self.rule, event) else None
        recovered = self._recovery(event)
        if recovered is not None:
            return recovered
        if not selects(self.rule, event):
            return None
        key = (event.kind, event.cluster, event.sync, event.revision, event.objects)
        last = self._seen.get(key)
        if last is not None and now - last < self.rule.dedup_window:
            return Verdict(suppressed=True)
        self._remember(key, now)
        return Verdict(reason=Reason.EVENT)

    def _problem(self, family: str, event: Event, now: float) -> Verdict:
        key = (family, event.cluster, event.sync)
        problem = self._open.get(key)
        if problem is None:
            self._open[key] = _Problem(first=event.time, sent=now)
            return Verdict(reason=Reason.FAILURE)
        if now - problem.sent < self.rule.dedup_window:
            problem.repeats += 1
            return Verdict(suppressed=True)
        repeats, problem.sent, problem.repeats = problem.repeats, now, 0
        return Verdict(reason=Reason.STILL_FAILING, since=problem.first, repeats=repeats)

    def _recovery(self, event: Event) -> Verdict | None:
        if not about(self.rule, event):
            return None
        for family in RECOVERIES.get(event.kind, ()):
            problem = self._open.pop((family, event.cluster, event.sync), None)
            if problem is not None:
                return Verdict(reason=Reason.RECOVERY, since=problem.first, repeats=problem.repeats)
        return None

    def _remember(self, key: Hashable, now: float) -> None:
        if len(self._seen) >= MEMORY:
            horizon = now - self.rule.dedup_window
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
            if len(self._seen) >= MEMORY:  # a storm of distinct events inside one window
                self._seen = dict(list(self._seen.items())[MEMORY // 2 :])
        self._seen[key] = now


class RateLimit:
    """A token bucket: `count` messages per `period` seconds, refilled continuously."""

    def __init__(self, count: int, period: float, now: float) -> None:
        self.count, self.period = count, period
        self._tokens = float(count)
        self._at = now
        #: Messages held back since the last one that went out.
        self.held = 0

    def allow(self, now: float) -> bool:
        self._tokens = min(self.count, self._tokens + (now - self._at) * self.count / self.period)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.held += 1
        return False

    def take_held(self) -> int:
        held, self.held = self.held, 0
        return held

"""The notifier: a root task of the daemon that turns bus events into deliveries.

`Notifications.run` subscribes to the fleet state's event bus and, for each
event and each ``[[notifications]]`` entry (a `_Route`), asks the entry's
gate (`fleetd.notify.dedup`) or, for commit statuses, the planner and its
memory (`fleetd.notify.statuses`), then hands what survives to the
targets' deliveries (`fleetd.notify.delivery`), which run as tasks of the
notifier's own task group.

Never in the way of reconciling: the state publishes without waiting, the
notifier does no I/O on its path (deliveries do), and a failure while
handling one event is logged and stays with that event. A notifier that
falls more than the bus's queue behind is dropped by the bus; it then
subscribes again and catches up from the journal by event id.

Live reload: when the inventory's notifications change, routes whose entry
is unchanged keep their memory and queues; the others are rebuilt (their
credential files read again). A target whose credentials cannot be read is
left out with one error in the log, and the others work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetd.daemon.events import Event
from fleetd.daemon.state import FleetState
from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Notification, TargetKind
from fleetd.notify import statuses
from fleetd.notify.chat import AppriseTarget
from fleetd.notify.credentials import Credential
from fleetd.notify.dedup import Gate, RateLimit
from fleetd.notify.delivery import RETRY_BASE, Delivery
from fleetd.notify.forges import CommitStatusTarget, WebhookTarget
from fleetd.notify.messages import notice
from fleetd.notify.post import Poster

log = logging.getLogger(__name__)


class _View:
    """`statuses.RolloutView` over the fleet state."""

    def __init__(self, state: FleetState) -> None:
        self._state = state

    def clusters(self) -> tuple[Cluster, ...]:
        return self._state.fleet.clusters

    def allowed(self, wave: int) -> str | None:
        return self._state.rollout.revision_for(wave)

    def halted_at(self) -> int | None:
        return self._state.position().halted_at

    def held(self) -> bool:
        return self._state.rollout.held


@dataclass(slots=True)
class _Route:
    """One ``[[notifications]]`` entry at work."""

    rule: Notification
    deliveries: list[Delivery[Any]]
    gate: Gate
    limit: RateLimit
    latest: statuses.Latest = field(default_factory=statuses.Latest)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Notifications:
    """See the module docstring. ``clock``: monotonic seconds (tests pass their own)."""

    def __init__(
        self,
        state: FleetState,
        *,
        retry_base: float = RETRY_BASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._counts: Counter[tuple[str, str]] = state.notifications
        self._retry_base, self._clock = retry_base, clock
        self._view = _View(state)
        self._routes: dict[str, _Route] = {}
        self._config: tuple[Notification, ...] | None = None
        self._last_id = 0
        self._tasks: asyncio.TaskGroup | None = None
        self._poster: Poster | None = None

    async def run(self) -> None:
        """Serve until cancelled."""
        async with Poster() as poster, asyncio.TaskGroup() as tasks:
            self._poster, self._tasks = poster, tasks
            while True:
                subscription = self._state.bus.subscribe()
                try:
                    self._catch_up()
                    async for event in subscription:
                        self.handle(event)
                finally:
                    subscription.close()
                log.warning("notifications fell behind the event bus; catching up from the journal")

    def _catch_up(self) -> None:
        if self._last_id:
            for event in self._state.events(after_id=self._last_id, limit=10_000):
                self.handle(event)

    def handle(self, event: Event) -> None:
        """Route one event to every notification (the fault boundary of one event)."""
        if event.id and event.id <= self._last_id:
            return
        self._last_id = max(self._last_id, event.id)
        try:
            self._sync_routes()
            for route in self._routes.values():
                self._route(route, event)
        except Exception:
            log.exception("notifications: internal error handling event %s", event.kind)

    def _route(self, route: _Route, event: Event) -> None:
        rule = route.rule
        if rule.kind.commit_status:
            for status in statuses.plan(event, self._view, prefix=rule.context, target_url=rule.target_url):
                if route.latest.changed(status):
                    for delivery in route.deliveries:
                        delivery.put(status, key=(status.sha, status.context))
            return
        now = self._clock()
        verdict = route.gate.decide(event, now)
        if verdict is None:
            return
        if verdict.suppressed or not route.limit.allow(now):
            self._counts[(rule.name, "suppressed")] += 1
            return
        message = notice(
            self._state.fleet.name, event, verdict, held=route.limit.take_held(), link=rule.target_url
        )
        for delivery in route.deliveries:
            delivery.put(message)

    # -- routes from the inventory --------------------------------------------------------

    def _sync_routes(self) -> None:
        config = self._state.fleet.notifications
        if config is self._config:
            return
        self._config = config
        wanted = {rule.name: rule for rule in config}
        for name, route in list(self._routes.items()):
            if wanted.get(name) != route.rule:
                for task in route.tasks:
                    task.cancel()
                del self._routes[name]
        for name, rule in wanted.items():
            if name not in self._routes:
                built = self._build(rule)
                if built is not None:
                    self._routes[name] = built

    def _build(self, rule: Notification) -> _Route | None:
        try:
            targets = self._targets(rule)
        except FleetdError as exc:
            log.error("notification %s is disabled: %s", rule.name, exc)  # noqa: TRY400 - the message says it all
            return None
        deliveries: list[Delivery[Any]] = [
            Delivery(rule.name, target, self._counts, retry_base=self._retry_base) for target in targets
        ]
        route = _Route(
            rule=rule,
            deliveries=deliveries,
            gate=Gate(rule),
            limit=RateLimit(*rule.rate_limit, self._clock()),
        )
        if self._tasks is not None:
            route.tasks = [
                self._tasks.create_task(d.run(), name=f"notify/{rule.name}/{i}")
                for i, d in enumerate(deliveries)
            ]
        for key in ("sent", "failed", "suppressed"):  # every series exists from the start, at 0
            self._counts[(rule.name, key)] += 0
        return route

    def _targets(self, rule: Notification) -> list[Any]:
        poster = self._poster
        if poster is None:
            raise FleetdError("notifications are built only while the notifier runs")
        if rule.kind is TargetKind.APPRISE:
            urls = [rule.url] if rule.url else Credential.read(_path(rule.url_file), "apprise URL").lines()
            return [AppriseTarget(url) for url in urls]
        if rule.kind is TargetKind.WEBHOOK:
            assert rule.url is not None
            return [
                WebhookTarget(poster, rule.url, Credential.read(_path(rule.secret_file), "webhook secret"))
            ]
        return [
            CommitStatusTarget(poster, rule, Credential.read(_path(rule.token_file), f"{rule.kind} token"))
        ]

    def pending(self) -> int:
        """Messages waiting in every delivery queue (for tests and the status of the notifier)."""
        return sum(d.pending for route in self._routes.values() for d in route.deliveries)


def _path(path: Path | None) -> Path:
    if path is None:  # the inventory requires it; kept for a Notification built by hand
        raise FleetdError("no credential file configured")
    return path

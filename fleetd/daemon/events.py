"""Typed fleet events and the in-process bus that carries them.

Every change the fleet state records is also an `Event`: what happened
(`EventKind`), how bad it is, where (cluster, sync, revision), a message for
people and the objects it is about. Events are appended to a bounded
journal in SQLite (`fleetd.daemon.store`) and published on the `EventBus`;
the status API, the web UI, MCP and notifications are all views of them.

An event never carries a secret: messages are built from object
identities, revisions, counts and error texts, which the render and secrets
stages keep free of decrypted values.

The bus never blocks the publisher: each subscriber has a bounded queue,
and a subscriber that falls that far behind is dropped and told so (it can
resume from the journal by event id, as the SSE endpoint does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What happened. The value is the stable, documented name."""

    RECONCILE_STARTED = "reconcile.started"
    RECONCILE_SUCCEEDED = "reconcile.succeeded"
    RECONCILE_FAILED = "reconcile.failed"
    SYNC_WAITING = "sync.waiting"
    SYNC_SUSPENDED = "sync.suspended"
    DRIFT_DETECTED = "drift.detected"
    DRIFT_CORRECTED = "drift.corrected"
    DRIFT_REPORTED = "drift.reported"
    OBJECTS_PRUNED = "objects.pruned"
    PRUNE_HELD = "prune.held"
    ROLLOUT_ADVANCED = "rollout.advanced"
    ROLLOUT_HALTED = "rollout.halted"
    ROLLOUT_HELD = "rollout.held"
    ROLLOUT_RESUMED = "rollout.resumed"
    ROLLOUT_PROMOTED = "rollout.promoted"
    CLUSTER_UNREACHABLE = "cluster.unreachable"
    CLUSTER_RECOVERED = "cluster.recovered"
    SOURCE_REVISION = "source.revision"
    SOURCE_FAILED = "source.failed"
    INVENTORY_REJECTED = "inventory.rejected"
    INVENTORY_RELOADED = "inventory.reloaded"
    OPERATOR_ACTION = "operator.action"
    STATE_UNRECORDED = "state.unrecorded"
    STATE_RECORDED = "state.recorded"
    SHARD_MEMBERSHIP = "shard.membership"
    SHARD_ACQUIRED = "shard.acquired"
    SHARD_RELEASED = "shard.released"
    SHARD_LOST = "shard.lost"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One thing that happened to the fleet."""

    kind: EventKind
    message: str
    severity: Severity = Severity.INFO
    cluster: str | None = None
    sync: str | None = None
    revision: str | None = None
    objects: tuple[str, ...] = ()
    """The objects it is about, as ``Kind namespace/name``."""
    time: float = field(default_factory=time.time)
    id: int = 0
    """Position in the journal (0 until recorded)."""

    def numbered(self, id: int) -> Event:
        return replace(self, id=id)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "kind": str(self.kind),
            "severity": str(self.severity),
            "cluster": self.cluster,
            "sync": self.sync,
            "revision": self.revision,
            "message": self.message,
            "objects": list(self.objects),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Event:
        return cls(
            id=int(doc["id"]), time=float(doc["time"]), kind=EventKind(doc["kind"]),
            severity=Severity(doc["severity"]), cluster=doc.get("cluster"), sync=doc.get("sync"),
            revision=doc.get("revision"), message=str(doc["message"]),
            objects=tuple(doc.get("objects") or ()),
        )  # fmt: skip


#: Events a subscriber may fall behind by before it is dropped.
QUEUE_SIZE = 1000


class Subscription:
    """One subscriber's bounded queue; iterate it to receive events, close it when done."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_SIZE)
        #: Set when the subscriber fell more than `QUEUE_SIZE` events behind and was dropped.
        self.lagged = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    """Fan-out of events to in-process subscribers; publishing never blocks."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.lagged = True
                self._subscribers.discard(sub)
                with contextlib.suppress(asyncio.QueueFull, asyncio.QueueEmpty):
                    sub.queue.get_nowait()
                    sub.queue.put_nowait(None)  # ends its iteration

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

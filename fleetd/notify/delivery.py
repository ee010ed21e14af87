"""One target's queue and worker: retried with back-off, bounded, and counted.

`Delivery.put` never blocks and never fails: the notifier calls it for
every message it decides to send. The worker (`Delivery.run`, one task per
target) sends the oldest message first; a temporary failure is retried
after `fleetd.util.backoff.backoff` (or the receiver's ``Retry-After``) up
to `ATTEMPTS` times; a permanent one (401, 403, 404, 422...) is not
retried. Messages given the same key replace each other while they wait
(a commit status that changed again before it went out is sent once, in
its newest state). At most `MAX_PENDING` wait: past that the oldest is
dropped and counted as failed.

Results go to the fleet state's counter ``(notification, result)`` with
result ``sent`` or ``failed`` (the notifier counts ``suppressed``), which
`fleetd.api.metrics` exposes as ``fleetd_notifications_total``. Failures
are logged with the notification's name, the target's label (service or
host) and the reason, never with a credential.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from fleetd.notify.post import DeliveryError
from fleetd.util.backoff import backoff

log = logging.getLogger(__name__)

ATTEMPTS = 6
MAX_PENDING = 500
#: Back-off after the n-th failed attempt: about 1, 2, 4, 8, 16 s by default (capped at RETRY_CAP).
RETRY_BASE = 1.0
RETRY_CAP = 60.0
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Target(Protocol[T_contra]):
    """Something that delivers one message or raises `DeliveryError`."""

    @property
    def label(self) -> str: ...
    async def send(self, message: T_contra, /) -> None: ...


class Delivery(Generic[T]):
    """See the module docstring."""

    def __init__(
        self,
        name: str,
        target: Target[T],
        counts: Counter[tuple[str, str]],
        *,
        retry_base: float = RETRY_BASE,
    ) -> None:
        self.name, self.target, self._counts = name, target, counts
        self._retry_base = retry_base
        self._pending: OrderedDict[Hashable, T] = OrderedDict()
        self._ready = asyncio.Event()
        self._sequence = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def put(self, message: T, key: Hashable | None = None) -> None:
        """Queue `message`; one already waiting under the same `key` is replaced."""
        if key is None:
            self._sequence += 1
            key = ("#", self._sequence)
        self._pending.pop(key, None)
        self._pending[key] = message
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
            self._counts[(self.name, "failed")] += 1
            log.warning(
                "notification %s: %s is behind; dropped its oldest message", self.name, self.target.label
            )
        self._ready.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            await self._ready.wait()
            if not self._pending:
                self._ready.clear()
                continue
            _, message = self._pending.popitem(last=False)
            await self._deliver(message)

    async def _deliver(self, message: T) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self.target.send(message)
            except DeliveryError as exc:
                if not exc.temporary or attempt == ATTEMPTS:
                    self._give_up(str(exc), attempt)
                    return
                delay = max(backoff(attempt, base=self._retry_base, cap=RETRY_CAP), exc.retry_after or 0.0)
                log.info("notification %s: %s; retrying in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)
            except Exception as exc:  # noqa: BLE001 - one target's bug stays with that target
                # No traceback: a third-party exception's text may quote a URL that holds a token.
                log.error("notification %s: internal error sending to %s: %s", self.name,  # noqa: TRY400
                          self.target.label, type(exc).__name__)  # fmt: skip
                self._give_up(f"internal error: {type(exc).__name__}", attempt)
                return
            else:
                self._counts[(self.name, "sent")] += 1
                return

    def _give_up(self, reason: str, attempts: int) -> None:
        self._counts[(self.name, "failed")] += 1
        log.warning("notification %s: not delivered to %s after %d attempt(s): %s", self.name,
                    self.target.label, attempts, reason)  # fmt: skip

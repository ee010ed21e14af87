"""This replica's membership Lease: join, renew every period, and know until when writing is safe.

**Joining.** The Lease ``<fleet>.replica.<identity>`` is created, or taken
over once its previous holder is gone (`fleetd.shard.view`) — a second
process started under the same identity waits, and says so, instead of
sharing it.

**Renewing.** Every ``renew_period`` the Lease is replaced, conditional on
the version last written. A renewal *sent* at monotonic time ``t`` lets this
replica write until ``t + lease_duration - renew_period`` (`valid_until`).
Another replica declares it gone only after seeing that version unchanged
for a whole ``lease_duration`` of *its* time, which starts no earlier than
``t``: so this replica has stopped writing for at least one renew period
before anyone may take its clusters over — a margin for writes still in
flight. Renewals that fail are counted; when none succeeds before
`valid_until`, writing stops (the guards say no) and the coordinator drops
every cluster.

**Epochs.** `epoch` grows whenever continuity breaks: a rejoin, or a
renewal whose answer arrives only after `valid_until` had passed. Clusters held
under an older epoch are lost — someone may have taken them meanwhile —
and must be acquired again, conditionally, before anything is written.

**Leaving.** `leave` deletes the Lease (conditional on its version), so the
others see the replica go at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from fleetd.kube.client import Conflict, KubeError, NotFound
from fleetd.shard.leases import Lease, LeaseApi
from fleetd.shard.view import LeaseView

log = logging.getLogger(__name__)


class MemberRecorder(Protocol):
    """Where membership changes are recorded (the fleet state)."""

    def shard_member(self, member: bool, error: str | None) -> None: ...

    def shard_renew_failed(self, error: str) -> None: ...


class Membership:
    """See the module docstring."""

    def __init__(
        self,
        *,
        identity: str,
        holder: str,
        duration: float,
        period: float,
        view: LeaseView,
        record: MemberRecorder,
        on_change: Callable[[], None],
    ) -> None:
        self.identity, self.holder = identity, holder
        self._duration, self._period = duration, period
        self._view, self._record, self._on_change = view, record, on_change
        self.lease: Lease | None = None
        self.valid_until = 0.0
        self.renewed_at = 0.0
        self.joined_at = 0.0
        self.epoch = 0
        self._waiting_logged = False

    def valid(self) -> bool:
        """Whether this replica may write now (membership renewed recently enough)."""
        return self.lease is not None and time.monotonic() < self.valid_until

    async def run(self, api: LeaseApi) -> None:
        """Join, then renew every period, until cancelled; a failed renewal is retried twice as often."""
        while True:
            attempt = time.monotonic()
            try:
                await (self._renew(api) if self.lease is not None else self._join(api))
            except KubeError as exc:
                self._failed(str(exc))
            if self.lease is None:
                due = attempt + self._period
            else:  # the next renewal, but never a busy loop against a management cluster that refuses
                due = max(self.renewed_at + self._period, attempt + self._period / 2)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def leave(self, api: LeaseApi) -> None:
        """Give the membership up: the others see this replica go at once."""
        lease, self.lease, self.valid_until = self.lease, None, 0.0
        if lease is not None:
            with contextlib.suppress(Conflict):
                await api.delete(self._view.seen("replica", self.identity).lease or lease)

    # -- joining -----------------------------------------------------------------

    async def _join(self, api: LeaseApi) -> None:
        current = self._view.seen("replica", self.identity).lease
        sent = time.monotonic()
        try:
            if current is None:
                lease = await api.create(
                    "replica", self.identity, holder=self.holder, duration=self._lease_seconds
                )
            elif current.holder in ("", self.holder) or await self._predecessor_gone(api, current):
                lease = await api.replace(current, holder=self.holder)
            else:
                self._wait_for(current)
                return
        except Conflict:  # someone else wrote it first: look again next time
            self._refresh(await api.get("replica", self.identity))
            return
        self._took(lease, sent, joined=True)
        log.info("replica %s joined the fleet's replicas (holder %s)", self.identity, self.holder)

    async def _predecessor_gone(self, api: LeaseApi, current: Lease) -> bool:
        """Whether the process holding our identity's Lease is gone, confirmed by a fresh read."""
        if not self._view.holder_gone(current.holder, self._duration):
            return False
        self._refresh(await api.get("replica", self.identity))
        return self._view.holder_gone(current.holder, self._duration)

    def _wait_for(self, current: Lease) -> None:
        if not self._waiting_logged:
            log.warning(
                "replica identity %s is still held by %s — an earlier run that did not stop cleanly, or a "
                "second fleetd with this identity; joining once it has not renewed for %gs",
                self.identity, current.holder, self._duration,
            )  # fmt: skip
            self._record.shard_member(False, f"identity {self.identity} is held by {current.holder}")
            self._waiting_logged = True

    # -- renewing -----------------------------------------------------------------

    async def _renew(self, api: LeaseApi) -> None:
        assert self.lease is not None
        sent = time.monotonic()
        # A slow answer that still arrives while the last renewal is valid keeps the clusters: wait that long.
        timeout = max(self._period / 2, self.valid_until - sent)
        try:
            lease = await api.replace(self.lease, holder=self.holder, timeout=timeout)
        except (Conflict, NotFound) as exc:
            current = await api.get("replica", self.identity)
            if current is not None and current.holder == self.holder:  # our own write that timed out
                self._view.observe(current)
                self.lease = current
                return
            self._lost(f"the membership Lease was changed by someone else ({exc.detail})")
            return
        self._took(lease, sent, joined=False)

    def _took(self, lease: Lease, sent: float, *, joined: bool) -> None:
        # Continuity holds only if this renewal was *confirmed* while the last one was still valid:
        # otherwise another replica may have taken a cluster meanwhile, so every cluster is lost.
        if joined or time.monotonic() >= self.valid_until:
            self.epoch += 1
            self.joined_at = time.monotonic()
        self.lease, self.renewed_at = lease, sent
        self.valid_until = sent + self._duration - self._period
        self._view.observe(lease)
        self._waiting_logged = False
        self._record.shard_member(True, None)
        self._on_change()

    def _failed(self, error: str) -> None:
        self._record.shard_renew_failed(error)
        if self.lease is None:
            self._record.shard_member(False, error)
            return
        late = time.monotonic() >= self.valid_until
        log.warning(
            "replica %s: membership not renewed: %s%s", self.identity, error,
            "; writes stop until it is" if late else "",
        )  # fmt: skip
        if late:
            self._record.shard_member(False, f"membership not renewed in time: {error}")
            self._on_change()

    def _lost(self, reason: str) -> None:
        log.warning("replica %s lost its membership: %s; every write stops", self.identity, reason)
        self.lease, self.valid_until = None, 0.0
        self._record.shard_renew_failed(reason)
        self._record.shard_member(False, reason)
        self._on_change()

    def _refresh(self, lease: Lease | None) -> None:
        self._view.refresh("replica", self.identity, lease)

    @property
    def _lease_seconds(self) -> int:
        return int(self._duration)

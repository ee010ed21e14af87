"""One replica's part in a sharded fleet: which clusters it serves, and the guard on every write.

The `Coordinator` runs as one root task of the daemon. It connects to the
management cluster, keeps a `LeaseView` fed by a watch of the fleet's
Leases, keeps this replica a member (`Membership`), and balances: after
every change it sees, and at least every renew period,

1. **drops** clusters it can no longer be sure of — its membership lapsed
   (a newer epoch) or the cluster's Lease names someone else — and stops
   their workers (the guards said no already);
2. **assigns** every cluster of the inventory to a live replica by
   rendezvous hashing (`fleetd.shard.assign`), pins respected;
3. **releases** the clusters it holds that now belong elsewhere: first the
   guard says no, then the worker is stopped and awaited, then the Lease is
   released, so the next owner starts only after the last write;
4. **acquires** the clusters assigned to it whose Lease is free: absent,
   released, or held by a process that is gone — which the view judges by
   its own clock and a fresh read confirms (`fleetd.shard.view`) — with a
   write conditional on the version seen, so exactly one contender wins;
5. **starts** a worker for every cluster it holds, through the daemon.

**Fencing.** `guard` returns the check every write to a cluster passes
(`fleetd.reconcile.guard`): the cluster is held under the current
membership epoch, the membership is valid by this replica's clock, and the
view shows the cluster's Lease still naming this process. No I/O: it is
asked before every write.

**Leaving.** On SIGTERM the daemon stops every worker, then `leave`
releases every cluster Lease and deletes the membership: the others take
over at once instead of waiting a lease duration.

Nothing raised in here reaches the daemon: errors talking to the management
cluster are logged and retried; without the management cluster this replica
serves no cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol

from fleetd.inventory import Cluster, Sharding
from fleetd.kube.client import Conflict, KubeError, connect
from fleetd.kube.watch import ResourceWatch
from fleetd.reconcile.guard import Fenced, Guard
from fleetd.shard.assign import assign, pins
from fleetd.shard.leases import LEASES, Lease, LeaseApi, new_holder, replica_of
from fleetd.shard.membership import MemberRecorder, Membership
from fleetd.shard.view import LeaseView
from fleetd.util.backoff import backoff

log = logging.getLogger(__name__)

#: Cluster Leases acquired or released at the same time.
PARALLEL = 16
#: A replica whose membership Lease has not changed for this long is forgotten (its Lease deleted).
FORGET_GONE_AFTER = 3600.0
#: Seconds `leave` may take (the daemon's whole stop takes at most 10 s).
LEAVE_TIMEOUT = 3.0


class ShardRecorder(MemberRecorder, Protocol):
    """Where the coordinator records what it does and sees (the fleet state)."""

    def shard_gained(self, cluster: str, previous: str | None) -> None: ...

    def shard_released(self, cluster: str, to: str | None) -> None: ...

    def shard_lost(self, cluster: str, reason: str) -> None: ...

    def shard_seen(
        self, *, owned: AbstractSet[str], live: AbstractSet[str], gone: AbstractSet[str],
        holders: Mapping[str, str], assigned: Mapping[str, str | None],
    ) -> None: ...  # fmt: skip


class Coordinator:
    """See the module docstring."""

    def __init__(
        self,
        config: Sharding,
        *,
        fleet: str,
        clusters: Callable[[], Sequence[Cluster]],
        start: Callable[[str], None],
        stop: Callable[[str], Awaitable[None]],
        record: ShardRecorder,
        requests: Counter[str] | None = None,
    ) -> None:
        self.config, self.fleet, self.identity = config, fleet, config.identity
        self.holder = new_holder(config.identity)
        self._clusters, self._start, self._stop, self._record = clusters, start, stop, record
        self._requests = requests
        self._duration, self._period = config.lease_duration, config.renew_period
        self._wake = asyncio.Event()
        self.view = LeaseView(fleet, on_change=self.wake)
        self.member = Membership(
            identity=self.identity, holder=self.holder, duration=self._duration, period=self._period,
            view=self.view, record=record, on_change=self.wake,
        )  # fmt: skip
        self.held: dict[str, int] = {}  # cluster -> the membership epoch it was acquired under
        self._serving: set[str] = set()  # clusters whose worker the daemon runs
        self._departing: set[str] = set()
        self._api: LeaseApi | None = None
        self._watch: ResourceWatch | None = None
        self._wanted: dict[str, str | None] = {}  # the last assignment computed
        self._error: str | None = None  # the last error logged, so a lasting one is logged once

    # -- what the daemon asks ----------------------------------------------------------

    def owns(self, cluster: str) -> bool:
        """Whether this replica holds the cluster's Lease now (its worker may run)."""
        return self.may_write(cluster)

    def may_write(self, cluster: str) -> bool:
        if self.held.get(cluster) != self.member.epoch or not self.member.valid():
            return False
        lease = self.view.seen("cluster", cluster).lease
        return lease is not None and lease.holder == self.holder

    def guard(self, cluster: str) -> Guard:
        """The check every write to ``cluster`` passes first; raises `Fenced` when it may not."""

        def check() -> None:
            if not self.may_write(cluster):
                raise Fenced(f"replica {self.identity} does not hold the Lease of cluster {cluster} now: "
                             "another replica may own it, nothing is written")  # fmt: skip

        return check

    def wake(self) -> None:
        """Balance now (a Lease changed, the inventory was reloaded)."""
        self._wake.set()

    def depart(self, cluster: str) -> bool:
        """Keep holding ``cluster`` although it left the inventory (its prune is due); False if not held."""
        if not self.may_write(cluster):
            return False
        self._departing.add(cluster)
        return True

    async def departed(self, cluster: str) -> None:
        """The departed cluster was pruned (or gave up): delete its Lease."""
        self._departing.discard(cluster)
        self.held.pop(cluster, None)
        self._serving.discard(cluster)
        lease = self.view.seen("cluster", cluster).lease
        if self._api is not None and lease is not None and lease.holder == self.holder:
            with contextlib.suppress(KubeError):  # a Lease left behind is deleted by nobody: harmless
                await self._api.delete(lease)

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, then watch, renew and balance until cancelled; nothing raised leaves."""
        api = await self._connect()
        watch = ResourceWatch(
            api.client, LEASES, api.selector, on_event=self.view.on_event, on_list=self.view.on_list,
            namespace=api.namespace,
        )  # fmt: skip
        self._watch = watch
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._forever("watching the Leases", watch.run), name="shard/watch")
            tasks.create_task(
                self._forever("renewing", lambda: self.member.run(api)), name="shard/membership"
            )
            while True:
                self._wake.clear()
                try:
                    await self._balance(api)
                    self._error = None
                except KubeError as exc:
                    if str(exc) != self._error:
                        log.warning("replica %s: balancing the fleet: %s", self.identity, exc)
                    self._error = str(exc)
                except Exception:  # a bug stays here: the guards keep writes safe meanwhile
                    log.exception("replica %s: internal error while balancing the fleet", self.identity)
                await self._sleep(self._next_wake())

    async def leave(self) -> None:
        """Release every cluster and the membership (the daemon stopped the workers already)."""
        api, self._api = self._api, None
        if api is None:
            return
        self.held, self._departing = {}, set()
        self._serving.clear()
        held = [
            s.lease.subject for s in self.view.leases("cluster") if s.lease and s.lease.holder == self.holder
        ]
        try:
            async with asyncio.timeout(LEAVE_TIMEOUT):
                await _bounded(self._release_lease(api, c) for c in held)
                await self.member.leave(api)
            log.info("replica %s left: released %d cluster(s)", self.identity, len(held))
        except (KubeError, TimeoutError) as exc:
            log.warning("replica %s: leaving: %s; the others take over after the lease duration",
                        self.identity, exc or "timed out")  # fmt: skip
        finally:
            await api.client.close()

    async def _connect(self) -> LeaseApi:
        failures = 0
        while True:
            try:
                client = await connect(
                    "management", self.config.kubeconfig, self.config.context, requests=self._requests
                )
            except KubeError as exc:
                failures += 1
                self._record.shard_member(False, str(exc))
                log.error("replica %s: cannot use the management cluster: %s", self.identity, exc)  # noqa: TRY400
                await asyncio.sleep(backoff(failures, cap=30.0))
                continue
            self._api = LeaseApi(client, fleet=self.fleet, namespace=self.config.namespace)
            return self._api

    async def _forever(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` until cancelled, restarting it after a bug (the guards close by themselves)."""
        while True:
            try:
                await run()
            except Exception:
                log.exception("replica %s: internal error while %s", self.identity, what)
                await asyncio.sleep(self._period)

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.01, delay)):
                await self._wake.wait()

    def _next_wake(self) -> float:
        """Seconds until something is due: a renew period, a lapse, the settling, the moment another
        replica counts as gone (its clusters are reassigned then, not at the next period)."""
        now = time.monotonic()
        due = [now + self._period]
        if self.member.valid():
            due += [self.member.valid_until, self.member.joined_at + self._period]
            due += self.view.expiries(self._duration)
            due += [self.view.gone_at(lease.holder, self._duration) for lease in self._waiting_for()]
        return max(0.01, min(t for t in due if t > now) - now)

    # -- balancing ------------------------------------------------------------------

    async def _balance(self, api: LeaseApi) -> None:
        self._drop_lost()
        for cluster in sorted(self._serving - set(self.held) - self._departing):
            await self._stop(cluster)
            self._serving.discard(cluster)
        if self._watch is not None and not self._watch.synced.is_set():
            self.view.relisted(await api.list())  # the watch is down: read the Leases directly
        wanted = self._wanted = self._assignment()
        if self.member.valid() and time.monotonic() >= self.member.joined_at + self._period:
            leaving = [c for c in self.held if c not in self._departing and wanted.get(c) != self.identity]
            await _bounded(self._release(api, c, wanted.get(c)) for c in leaving)
            await _bounded(self._release_lease(api, s.subject) for s in self._leftovers(wanted))
            mine = [c for c, o in wanted.items() if o == self.identity and c not in self.held]
            await _bounded(self._acquire(api, c) for c in mine)
            await self._forget_gone(api)
        for cluster in sorted(set(self.held) - self._serving - self._departing):
            self._serving.add(cluster)
            self._start(cluster)
        self._report(wanted)

    def _drop_lost(self) -> None:
        for cluster in list(self.held):
            if self.may_write(cluster):
                continue
            lease = self.view.seen("cluster", cluster).lease
            if not self.member.valid() or self.held[cluster] != self.member.epoch:
                reason = "the membership could not be renewed in time"
            else:
                reason = (
                    f"its Lease is held by {lease.replica or 'nobody'}" if lease else "its Lease was deleted"
                )
            del self.held[cluster]
            log.warning("replica %s lost cluster %s: %s; its worker stops", self.identity, cluster, reason)
            self._record.shard_lost(cluster, reason)

    def _assignment(self) -> dict[str, str | None]:
        live = self.view.live_replicas(self._duration)
        if self.member.valid():
            live.add(self.identity)
        else:
            live.discard(self.identity)
        return assign({c.name: pins(c, self.config.pin_label) for c in self._clusters()}, live)

    def _waiting_for(self) -> Iterable[Lease]:
        """Cluster Leases of clusters assigned here that another process still holds."""
        for cluster, owner in self._wanted.items():
            lease = self.view.seen("cluster", cluster).lease
            if owner == self.identity and lease is not None and lease.holder not in ("", self.holder):
                yield lease

    def _leftovers(self, wanted: dict[str, str | None]) -> list[Lease]:
        """Cluster Leases that name this process although it does not hold them (a failed release)."""
        return [
            s.lease for s in self.view.leases("cluster")
            if s.lease is not None and s.lease.holder == self.holder and s.lease.subject not in self.held
            and wanted.get(s.lease.subject) != self.identity
        ]  # fmt: skip

    async def _acquire(self, api: LeaseApi, cluster: str) -> None:
        lease = self.view.seen("cluster", cluster).lease
        try:
            if lease is None:
                taken = await api.create("cluster", cluster, holder=self.holder, duration=0)
            elif lease.holder in ("", self.holder) or await self._gone(api, lease.holder):
                taken = await api.replace(lease, holder=self.holder)
            else:
                return  # held by a live replica: it releases it, or its membership expires
        except Conflict:  # another replica was faster, or the Lease changed since seen
            self.view.refresh("cluster", cluster, await api.get("cluster", cluster))
            return
        self.view.observe(taken)
        if not self.member.valid():  # lapsed while acquiring: give it back at once
            await self._release_lease(api, cluster)
            return
        self.held[cluster] = self.member.epoch
        previous = lease.replica if lease is not None and lease.holder not in ("", self.holder) else None
        log.info("replica %s acquired cluster %s%s", self.identity, cluster,
                 f" from {previous} (gone)" if previous else "")  # fmt: skip
        self._record.shard_gained(cluster, previous)

    async def _gone(self, api: LeaseApi, holder: str) -> bool:
        """Whether ``holder`` is gone, as the view says and a fresh read of its membership confirms."""
        if not self.view.holder_gone(holder, self._duration):
            return False
        replica = replica_of(holder)
        self.view.refresh("replica", replica, await api.get("replica", replica))
        return self.view.holder_gone(holder, self._duration)

    async def _release(self, api: LeaseApi, cluster: str, to: str | None) -> None:
        """Hand ``cluster`` over: its worker stopped (awaited), no more writes, then the Lease released."""
        if cluster in self._serving:
            await self._stop(cluster)
            self._serving.discard(cluster)
        self.held.pop(cluster, None)
        await self._release_lease(api, cluster)
        log.info("replica %s released cluster %s to %s", self.identity, cluster, to or "nobody")
        self._record.shard_released(cluster, to)

    async def _release_lease(self, api: LeaseApi, cluster: str) -> None:
        lease = self.view.seen("cluster", cluster).lease
        if lease is None or lease.holder != self.holder:
            return
        try:
            if cluster in {c.name for c in self._clusters()}:
                self.view.observe(await api.replace(lease, holder=""))
            else:  # the cluster left the inventory: nothing to hand over
                await api.delete(lease)
        except Conflict:
            self.view.refresh("cluster", cluster, await api.get("cluster", cluster))

    async def _forget_gone(self, api: LeaseApi) -> None:
        """Delete membership Leases unchanged for `FORGET_GONE_AFTER` (replicas that never came back)."""
        for lease, age in self.view.ages("replica"):
            if age >= FORGET_GONE_AFTER and lease.subject != self.identity:
                with contextlib.suppress(Conflict):
                    await api.delete(lease)
                    log.info(
                        "replica %s: forgot replica %s, gone for %.0fs", self.identity, lease.subject, age
                    )

    def _report(self, wanted: dict[str, str | None]) -> None:
        live = self.view.live_replicas(self._duration) | ({self.identity} if self.member.valid() else set())
        gone = {lease.subject for lease, _ in self.view.ages("replica")} - live
        self._record.shard_seen(
            owned={c for c in self.held if self.may_write(c)}, live=live, gone=gone,
            holders=self.view.holders(), assigned=wanted,
        )  # fmt: skip


async def _bounded(jobs: Iterable[Awaitable[None]]) -> None:
    """Run ``jobs`` at most `PARALLEL` at a time; the first error is raised once all have ended."""
    limit = asyncio.Semaphore(PARALLEL)

    async def one(job: Awaitable[None]) -> None:
        async with limit:
            await job

    results = await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result

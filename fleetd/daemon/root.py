"""``fleetd run``: the composition root — build every part once, run them as named tasks of one group.

Root tasks, all in one :class:`asyncio.TaskGroup`:

* ``source`` — `fleetd.daemon.revisions`: one fetch per revision for the fleet;
* ``reload`` — `fleetd.daemon.reload`: live inventory reload;
* ``control`` and ``http`` — the control socket and the HTTP server
  (`fleetd.api`); each says why and ends early if its socket cannot open;
* ``systemd`` — readiness, status and watchdog notifications;
* ``notify`` — `fleetd.notify.Notifications`: messages, webhooks and commit
  statuses from the event bus;
* ``shard`` — with ``[fleet.sharding]`` only: the `fleetd.shard.Coordinator`,
  which decides which clusters this replica serves and guards every write;
* ``cluster/<name>`` — one `fleetd.daemon.worker.ClusterWorker` per cluster
  (per cluster this replica owns, when replicas share the fleet), each the
  fault boundary of everything done for its cluster.

Every part reports to the one `FleetState`; every surface reads it.

Shutdown is staged: SIGTERM or SIGINT sets the stop flag; the task group is
cancelled, which interrupts in-flight requests; connections are closed.
A sharded replica then releases its Leases, so the others take over at once.
The whole stop takes at most :data:`SHUTDOWN_TIMEOUT` seconds — the systemd
unit's ``TimeoutStopSec`` is set above it. A git fetch runs in a worker
thread that cannot be interrupted; it is abandoned, not waited for.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from fleetd.api import control
from fleetd.api import http as web
from fleetd.api.control import ControlError
from fleetd.daemon import systemd as notify
from fleetd.daemon.departures import Departures
from fleetd.daemon.events import EventBus
from fleetd.daemon.lock import LockError, StateLock
from fleetd.daemon.reload import Reloader
from fleetd.daemon.revisions import Revisions
from fleetd.daemon.state import FleetState
from fleetd.daemon.status import status_document
from fleetd.daemon.store import StateStore, StoreError
from fleetd.daemon.systemd import Notifier
from fleetd.daemon.worker import ClusterWorker, prune_everything
from fleetd.errors import FleetdError, InventoryError
from fleetd.inventory import Cluster, Fleet, GitRef, load_fleet
from fleetd.notify import Notifications
from fleetd.reconcile.guard import Guard, unguarded
from fleetd.render import RenderCache, sweep_stale_workdirs
from fleetd.secrets.decryptor import decryptor
from fleetd.shard import Coordinator
from fleetd.source import Snapshot, redact
from fleetd.util.fdlimit import raise_open_files_limit

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0


class Daemon:
    """One fleet, reconciled continuously until :meth:`stop`."""

    def __init__(self, fleet: Fleet) -> None:
        self.state = FleetState(fleet, StateStore(fleet.state_dir, recover=True), EventBus())
        self.revisions = Revisions(fleet.source, fleet.state_dir, state=self.state, on_new=self._new_revision)
        self.reloader = Reloader(self.state, self._apply_inventory, around=self._reloading)
        self.renders = RenderCache()
        self.departures = Departures(self.state, self._prune_departed)
        self.decrypt = decryptor(fleet.decryption)
        self._limiter = asyncio.Semaphore(fleet.concurrency)
        self.shard = self._coordinator()
        self.workers = {c.name: self._worker(c.name) for c in fleet.clusters}
        self.http_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._roots: list[asyncio.Task[None]] = []
        self.notifier = Notifier(None)  # silent unless serve() (the real process) says otherwise
        self.notifications = Notifications(self.state)

    @classmethod
    def from_config(cls, path: Path) -> Daemon:
        return cls(load_fleet(path))

    @property
    def fleet(self) -> Fleet:
        return self.state.fleet

    @property
    def reload_error(self) -> str | None:
        return self.reloader.error

    def _worker(self, name: str) -> ClusterWorker:
        return ClusterWorker(
            fleet=self.fleet.name, cluster=self.fleet.cluster(name), state=self.state, renders=self.renders,
            limiter=self._limiter, snapshot=lambda: self._snapshot_for(name), decrypt=self.decrypt,
            on_change=self._advance, guard=self._guard(name),
        )  # fmt: skip

    def _coordinator(self) -> Coordinator | None:
        """With ``[fleet.sharding]``: the part of this replica that decides which clusters it serves."""
        sharding, shard = self.fleet.sharding, self.state.shard
        if sharding is None or shard is None:
            return None
        return Coordinator(
            sharding, fleet=self.fleet.name, clusters=lambda: self.fleet.clusters, start=self._gain,
            stop=self._stop_worker, record=self.state, requests=shard.requests,
        )  # fmt: skip

    def _guard(self, cluster: str) -> Guard:
        return self.shard.guard(cluster) if self.shard is not None else unguarded

    def _snapshot_for(self, cluster: str) -> Snapshot | None:
        """The snapshot the cluster's rollout wave may apply now."""
        return self.revisions.snapshot(self.state.rollout.revision_for(self.fleet.cluster(cluster).wave))

    # -- rollout waves ---------------------------------------------------------

    def _advance(self) -> None:
        """Let waves take the current revision as far as health allows, and wake the ones that moved."""
        current = self.revisions.current
        if current is None:
            return
        for wave in self.state.advance(current.revision):
            for worker in self.workers.values():
                if worker.cluster.wave == wave:
                    worker.wake()
        self.revisions.keep_only(set(self.state.rollout.allowed.values()) | {current.revision})

    def _new_revision(self, snapshot: Snapshot) -> None:
        self.renders.evict_except(snapshot.revision)
        self._advance()
        for worker in self.workers.values():  # a wave may already be at this revision (restart)
            worker.wake()

    # -- what the control socket and the HTTP server call ---------------------------

    def hold(self) -> None:
        """Stop the rollout where it is: no wave takes a newer revision until :meth:`resume`."""
        self.state.hold()

    def resume(self) -> None:
        self.state.resume_rollout()
        self._advance()

    def promote(self) -> None:
        """Give the next wave the target revision even though the wave before it is not healthy."""
        self.state.promote()
        self._advance()

    def trigger_fetch(self) -> None:
        """Fetch the repository now (webhooks call this); a burst is one fetch in flight plus one queued."""
        self.revisions.trigger()

    def followed_ref(self) -> GitRef:
        return self.fleet.source.ref

    def trigger(self, cluster: str | None = None, sync: str | None = None) -> None:
        """Reconcile now: one sync, one cluster, or the whole fleet."""
        targets = [self._known(cluster, sync)] if cluster else list(self.workers.values())
        for worker in targets:
            worker.trigger(sync)
        self.state.operator(f"reconcile of {cluster or 'the fleet'}{'/' + sync if sync else ''} requested",
                            cluster=cluster, sync=sync)  # fmt: skip

    def suspend(self, cluster: str, sync: str | None) -> None:
        """Apply nothing to (and correct no drift of) a cluster or one of its syncs until resumed."""
        self._known(cluster, sync).suspend(sync)

    def resume_sync(self, cluster: str, sync: str | None) -> None:
        self._known(cluster, sync).resume(sync)

    def allow_prune(self, cluster: str, sync: str) -> None:
        """Let the next reconcile of one sync prune beyond its deletion budget."""
        self._known(cluster, sync).allow_prune(sync)
        self.state.operator(f"prune of {cluster}/{sync} allowed beyond its deletion budget",
                            cluster=cluster, sync=sync)  # fmt: skip

    def request_reload(self) -> None:
        """Re-read the inventory now (SIGHUP, ``fleetd reload``)."""
        self.reloader.request()

    def _known(self, cluster: str, sync: str | None) -> ClusterWorker:
        worker = self.workers.get(cluster)
        if worker is None:
            raise ControlError(
                f"no cluster {cluster!r} in the inventory (known: {', '.join(self.workers) or 'none'})"
            )
        if self.shard is not None and not self.shard.owns(cluster):
            holder = self.shard.view.holders().get(cluster)
            raise ControlError(
                f"cluster {cluster} is served by {f'replica {holder}' if holder else 'no replica yet'}, "
                f"not by {self.shard.identity}: ask that replica"
            )
        if sync is not None and sync not in {s.name for s in worker.cluster.syncs}:
            names = ", ".join(s.name for s in worker.cluster.syncs) or "none"
            raise ControlError(f"cluster {cluster} has no sync {sync!r} (its syncs: {names})")
        return worker

    def ready(self) -> tuple[bool, str]:
        return self.state.ready()

    def status_document(self) -> dict[str, Any]:
        return status_document(self.state, self._snapshot_for)

    def describe(self) -> str:
        """One line for ``systemctl status``: revision, reachable clusters, ready syncs (of those served)."""
        current = self.revisions.current
        if current is None:
            return "waiting for the first fetch of the source"
        served = [c for c in self.fleet.clusters if self.state.owns(c.name)]
        names = [c.name for c in served]
        reachable = sum(1 for n in names if self.state.cluster(n).reachable)
        keys = [(c.name, s.name) for c in served for s in c.syncs]
        ready = sum(
            1 for k in keys if (st := self.state.statuses.get(k)) is not None and st.result == "ready"
        )
        return (
            f"revision {current.revision[:12]}; {reachable}/{len(names)} clusters reachable; "
            f"{ready}/{len(keys)} syncs ready"
        )

    def healthy(self) -> bool:
        """For the systemd watchdog: every root task still runs (the loop answering is implied)."""
        return all(not t.done() for t in self._roots)

    # -- running ---------------------------------------------------------------

    def stop(self) -> None:
        if not self._stop.is_set():
            self.notifier.stopping("stopping")
        self._stop.set()

    async def stopping(self) -> None:
        """Return once a stop was asked for."""
        await self._stop.wait()

    async def run(self) -> None:
        """Run until :meth:`stop`; returns within :data:`SHUTDOWN_TIMEOUT` after it."""
        try:
            await self._run()
        finally:
            if self.shard is not None:  # every worker has stopped: hand the clusters over now
                await self.shard.leave()
        log.info("fleetd stopped")

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._roots = [
                    tg.create_task(self.revisions.run(), name="source"),
                    tg.create_task(self.revisions.upkeep(), name="source-upkeep"),
                    tg.create_task(self.departures.run(), name="departures"),
                    tg.create_task(self.reloader.run(), name="reload"),
                    tg.create_task(self.notifications.run(), name="notify"),
                ]
                # These two may end early when their socket cannot be opened; they say why.
                tg.create_task(self._control(), name="control")
                tg.create_task(self._http(), name="http")
                tg.create_task(
                    notify.announce(
                        self.notifier, started=self.started, describe=self.describe, healthy=self.healthy
                    ),
                    name="systemd",
                )
                if self.shard is not None:
                    self._roots.append(tg.create_task(self.shard.run(), name="shard"))
                for name in self.workers:
                    self._start_worker(name)
                self.started.set()
                await self._stop.wait()
                raise _Stopping  # noqa: TRY301 - cancels every root task of the group at once
        except* _Stopping:
            pass

    def _start_worker(self, name: str) -> None:
        """Run the cluster's worker — when replicas share the fleet, only if this one owns the cluster."""
        assert self._tg is not None
        if self.shard is not None and not self.shard.owns(name):
            return
        self._tasks[name] = self._tg.create_task(self.workers[name].run(), name=f"cluster/{name}")

    def _gain(self, name: str) -> None:
        """This replica acquired the cluster's Lease: a fresh worker, reconciling everything at once."""
        if self._tg is None or name not in self.workers or name in self._tasks:
            return
        self.workers[name] = self._worker(name)
        self._start_worker(name)

    async def _stop_worker(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _control(self) -> None:
        """The local control socket for the CLI; without it the daemon still reconciles."""
        try:
            runner = await control.serve(self, self.fleet.state_dir)
        except OSError as exc:
            log.error("control socket not started: %s; fleetd reconcile/suspend/... will not work", exc)  # noqa: TRY400
            return
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _http(self) -> None:
        """The HTTP server; if it cannot start, say why and keep reconciling without it."""
        hooks = self.fleet.webhooks
        try:
            await web.serve(
                self, self.state, host=self.fleet.listen_host, port=self.fleet.listen_port,
                github_secret=hooks.github_secret_file, generic_secret=hooks.generic_secret_file,
                gitlab_secret=hooks.gitlab_token_file, ready=self.http_ready,
            )  # fmt: skip
        except FleetdError as exc:
            log.error("HTTP server not started: %s; reconciling continues without it", exc)  # noqa: TRY400

    # -- live reload ---------------------------------------------------------------

    def _reloading(self, starting: bool) -> None:
        if starting:
            self.notifier.reloading("reloading the inventory")
        else:
            self.notifier.ready_after_reload(self.describe())

    async def reload(self) -> bool:
        """Reload now and say whether the inventory on disk was taken."""
        return await self.reloader.reload()

    async def _apply_inventory(self, old: Fleet, new: Fleet) -> str:
        """Swap workers for the clusters that changed; return a one-line summary."""
        if (new.state_dir, new.listen_host, new.listen_port, new.name) != (
            old.state_dir, old.listen_host, old.listen_port, old.name,
        ):  # fmt: skip
            log.warning("fleet name, state_dir and listen changes take effect after a restart")
        if new.sharding != old.sharding:
            log.warning("[fleet.sharding] changes take effect after a restart")
        if new.source != old.source:
            self.revisions.replace(new.source, old.state_dir)
        if new.decryption != old.decryption:
            self.decrypt = decryptor(new.decryption)
            self.renders.clear()
        before = {c.name: c for c in old.clusters}
        after = {c.name: c for c in new.clusters}
        for name in before.keys() - after.keys():  # removed: stop; its objects stay unless asked otherwise
            await self._stop_worker(name)
            self.workers.pop(name)
            self.state.forget_cluster(name)
            if new.prune_removed_clusters and (self.shard is None or self.shard.depart(name)):
                self.departures.leave(old.name, before[name], new.prune_grace)
        for name in after:
            self.departures.returned(name)
        changed = [
            n for n in after if n not in before or after[n] != before[n] or new.decryption != old.decryption
        ]
        for name in changed:  # new or different: a fresh worker, reconciling everything at once
            await self._stop_worker(name)
            self.workers[name] = self._worker(name)
            self.workers[name].trigger()
            self._start_worker(name)
        if self.shard is not None:
            self.shard.wake()
        self._advance()
        summary = (
            f"inventory reloaded: {len(after)} cluster(s); "
            f"added {sorted(after.keys() - before.keys()) or 'none'}, "
            f"removed {sorted(before.keys() - after.keys()) or 'none'}, "
            f"changed {sorted(set(changed) & before.keys()) or 'none'}"
        )
        log.info("%s", summary)
        return summary

    async def _prune_departed(self, fleet: str, cluster: Cluster) -> list[str]:
        try:
            return await prune_everything(
                fleet=fleet,
                cluster=cluster,
                state=self.state,
                renders=self.renders,
                guard=self._guard(cluster.name),
            )
        finally:
            if self.shard is not None:  # pruned or not, the cluster has left: so does its Lease
                await self.shard.departed(cluster.name)


class _Stopping(Exception):
    """Raised inside the task group to cancel every root task."""


async def serve(config: Path) -> int:
    """Entry point of ``fleetd run``: load, lock the state directory, run until a signal, stop in time."""
    try:
        fleet = load_fleet(config)
        lock = StateLock.acquire(fleet.state_dir)  # before anything in the state directory is opened
    except InventoryError as exc:
        log.error("the inventory is invalid:\n%s", exc)  # noqa: TRY400 - the problems are the message; no traceback
        return 2
    except LockError as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message names the other daemon
        return 2
    with lock:
        return await _serve(fleet)


async def _serve(fleet: Fleet) -> int:
    raise_open_files_limit()
    for warning in fleet.warnings:  # valid, but probably not meant: a selector matching nothing
        log.warning("inventory: %s", warning)
    try:
        daemon = Daemon(fleet)
    except StoreError as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message says what to do
        return 2
    for stale in sweep_stale_workdirs():
        log.warning("removed a kustomize work directory a killed fleetd left behind: %s", stale)
    daemon.notifier = Notifier.from_environ()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    log.info(
        "fleetd starting: fleet %s, %d cluster(s), source %s",
        daemon.fleet.name, len(daemon.fleet.clusters), redact(daemon.fleet.source.url),
    )  # fmt: skip
    runner = asyncio.create_task(daemon.run(), name="daemon")
    stopping = asyncio.create_task(daemon.stopping(), name="stopping")
    await asyncio.wait({runner, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():  # the daemon ended on its own: only a bug does that
        stopping.cancel()
        runner.result()
        return 1
    try:
        async with asyncio.timeout(SHUTDOWN_TIMEOUT):
            await runner
    except TimeoutError:
        log.warning("shutdown took longer than %.0fs; abandoning remaining work", SHUTDOWN_TIMEOUT)
    return 0

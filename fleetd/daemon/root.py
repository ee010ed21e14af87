"""``fleetd run``: the long-running daemon and its named root tasks.

Root tasks, all in one :class:`asyncio.TaskGroup`:

* ``source`` — fetches the repository once per interval (or when
  triggered) for the whole fleet; a new revision wakes every worker;
* ``cluster/<name>`` — one :class:`~fleetd.daemon.worker.ClusterWorker` per cluster.

Shutdown is staged: SIGTERM or SIGINT sets the stop flag; the task group is
cancelled, which interrupts in-flight requests; connections are closed.
The whole stop takes at most :data:`SHUTDOWN_TIMEOUT` seconds — the systemd
unit's ``TimeoutStopSec`` is set above it. A git fetch runs in a worker
thread that cannot be interrupted; it is abandoned, not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

from fleetd.api import control
from fleetd.api import http as web
from fleetd.api.control import ControlError
from fleetd.api.metrics import FleetMetrics
from fleetd.daemon.rollout import Rollout
from fleetd.daemon import systemd as notify
from fleetd.daemon.status import sync_fields
from fleetd.daemon.store import StateStore, SyncStatus
from fleetd.daemon.systemd import Notifier
from fleetd.daemon.worker import ClusterWorker
from fleetd.errors import FleetdError, InventoryError
from fleetd.inventory import Decryption, Fleet, load_fleet
from fleetd.render import Decrypt, RenderCache
from fleetd.secrets.sops import KeyRing, SopsError, decrypt_bytes
from fleetd.source.git import GitSourceFetcher, Snapshot, SourceError, redact

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0
#: How often the inventory files are checked for changes (seconds).
RELOAD_POLL = 2.0


class Daemon:
    """One fleet, reconciled continuously until :meth:`stop`."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.state = StateStore(fleet.state_dir)
        self.source = GitSourceFetcher(fleet.source, fleet.state_dir)
        self.renders = RenderCache()
        self.decrypt = decryptor(fleet.decryption)
        self._limiter = asyncio.Semaphore(fleet.concurrency)
        self.metrics = FleetMetrics()
        self.metrics.set_inventory_valid(True)
        for status in self.state.statuses():
            self.metrics.restore_status(status)
        self.rollout = Rollout((c.wave for c in fleet.clusters), self.state)
        self._snapshots: dict[str, Snapshot] = {}  # revisions some wave may apply
        self.workers = {c.name: self._worker(c.name) for c in fleet.clusters}
        self.http_ready = asyncio.Event()
        self._fetch_now = asyncio.Event()
        self._reload_now = asyncio.Event()
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.reloaded = asyncio.Event()  # set after every reload attempt (tests and notify wait on it)
        self.reload_error: str | None = None
        self._stamp = inventory_stamp(fleet)
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._roots: list[asyncio.Task[None]] = []
        self.notifier = Notifier(None)  # silent unless serve() (the real process) says otherwise

    @classmethod
    def from_config(cls, path: Path) -> Daemon:
        return cls(load_fleet(path))

    def _worker(self, name: str) -> ClusterWorker:
        return ClusterWorker(
            fleet=self.fleet.name,
            cluster=self.fleet.cluster(name),
            state=self.state,
            renders=self.renders,
            limiter=self._limiter,
            snapshot=lambda: self._snapshot_for(name),
            decrypt=self.decrypt,
            on_status=self._on_status,
            on_drift=lambda sync, kind, corrected: self._count_drift(name, sync, kind, corrected),
        )

    def _snapshot_for(self, cluster: str) -> Snapshot | None:
        """The snapshot the cluster's rollout wave may apply now."""
        revision = self.rollout.revision_for(self.fleet.cluster(cluster).wave)
        return self._snapshots.get(revision) if revision else None

    def _on_status(self, status: SyncStatus) -> None:
        self.metrics.observe_status(status)
        self._advance()

    # -- rollout waves ---------------------------------------------------------

    def _wave(self, wave: int) -> list[ClusterWorker]:
        return [w for w in self.workers.values() if w.cluster.wave == wave and not w.cluster.suspend]

    def _healthy(self, wave: int, revision: str) -> bool:
        return all(
            w.statuses.get(s.name) is not None
            and w.statuses[s.name].result == "ready"
            and w.statuses[s.name].revision == revision
            for w in self._wave(wave)
            for s in w.cluster.syncs
            if not s.suspend
        )

    def _failing(self, wave: int, revision: str) -> bool:
        return any(
            st.result == "failed" and st.revision == revision
            for w in self._wave(wave)
            for st in w.statuses.values()
        )

    def _advance(self) -> None:
        """Let waves take the current revision as far as health allows, and wake the ones that moved."""
        current = self.source.current
        if current is None:
            return
        for wave in self.rollout.advance(current.revision, self._healthy):
            for worker in self._wave(wave):
                worker.wake()
        in_use = set(self.rollout.allowed.values()) | {current.revision}
        self._snapshots = {r: s for r, s in self._snapshots.items() if r in in_use}
        self.source.pin(in_use)

    def hold(self) -> None:
        """Stop the rollout where it is: no wave takes a newer revision until :meth:`resume`."""
        self.rollout.hold()

    def resume(self) -> None:
        self.rollout.resume()
        self._advance()

    def promote(self) -> None:
        """Give the next wave the target revision even though the wave before it is not healthy."""
        self.rollout.promote()
        self._advance()

    def _count_drift(self, cluster: str, sync: str, kind: str, corrected: bool) -> None:
        self.metrics.record_drift(cluster, sync, kind)
        if corrected:
            self.metrics.record_correction(cluster, sync, kind)

    # -- control ---------------------------------------------------------------

    def stop(self) -> None:
        if not self._stop.is_set():
            self.notifier.stopping("stopping")
        self._stop.set()

    def describe(self) -> str:
        """One line for ``systemctl status``: revision, reachable clusters, ready syncs."""
        current = self.source.current
        if current is None:
            return "waiting for the first fetch of the source"
        reachable = sum(1 for w in self.workers.values() if w.reachable)
        statuses = [w.statuses.get(s.name) for w in self.workers.values() for s in w.cluster.syncs]
        ready = sum(1 for st in statuses if st is not None and st.result == "ready")
        return (
            f"revision {current.revision[:12]}; {reachable}/{len(self.workers)} clusters reachable; "
            f"{ready}/{len(statuses)} syncs ready"
        )

    def healthy(self) -> bool:
        """For the systemd watchdog: every root task still runs (the loop answering is implied)."""
        return all(not t.done() for t in self._roots)

    async def stopping(self) -> None:
        """Return once a stop was asked for."""
        await self._stop.wait()

    def trigger_fetch(self) -> None:
        """Fetch the repository now (webhooks call this)."""
        self._fetch_now.set()

    def trigger(self, cluster: str | None = None, sync: str | None = None) -> None:
        """Reconcile now: one sync, one cluster, or the whole fleet."""
        targets = [self._known(cluster, sync)] if cluster else list(self.workers.values())
        for worker in targets:
            worker.trigger(sync)

    def suspend(self, cluster: str, sync: str | None) -> None:
        """Apply nothing to (and correct no drift of) a cluster or one of its syncs until resumed."""
        self._known(cluster, sync).suspend(sync)

    def resume_sync(self, cluster: str, sync: str | None) -> None:
        self._known(cluster, sync).resume(sync)

    def _known(self, cluster: str, sync: str | None) -> ClusterWorker:
        worker = self.workers.get(cluster)
        if worker is None:
            raise ControlError(
                f"no cluster {cluster!r} in the inventory (known: {', '.join(self.workers) or 'none'})"
            )
        if sync is not None and sync not in {s.name for s in worker.cluster.syncs}:
            names = ", ".join(s.name for s in worker.cluster.syncs) or "none"
            raise ControlError(f"cluster {cluster} has no sync {sync!r} (its syncs: {names})")
        return worker

    def request_reload(self) -> None:
        """Re-read the inventory now (SIGHUP, ``fleetd reload``)."""
        self._reload_now.set()

    # -- web.FleetView -------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if self.source.current is None:
            error = self.source.last_error
            return False, f"source not fetched yet{': ' + str(error) if error else ''}"
        return True, "ok"

    def status_document(self) -> dict[str, Any]:
        snapshot, error = self.source.current, self.source.last_error
        return {
            "fleet": self.fleet.name,
            "source": {
                "url": redact(self.fleet.source.url),
                "ref": f"{self.fleet.source.ref.kind} {self.fleet.source.ref.value}",
                "revision": snapshot.revision if snapshot else None,
                "last_error": str(error) if error else None,
            },
            "rollout": self.rollout.position(self._failing).to_json(),
            "clusters": [self._cluster_document(name, worker) for name, worker in self.workers.items()],
        }

    def _cluster_document(self, name: str, worker: ClusterWorker) -> dict[str, Any]:
        drift = worker.drift
        syncs = [
            {
                "name": s.name,
                **sync_fields(worker.statuses.get(s.name)),
                "drifted": drift.drifted_count(s.name) if drift else 0,
            }
            for s in worker.cluster.syncs
        ]
        snapshot = self._snapshot_for(name)
        return {
            "name": name, "wave": worker.cluster.wave, "revision": snapshot.revision if snapshot else None,
            "reachable": worker.reachable, "last_error": worker.last_error, "syncs": syncs,
        }  # fmt: skip

    def refresh_metrics(self) -> None:
        """Bring gauges that follow live state up to date (called on every scrape)."""
        for name, worker in self.workers.items():
            if worker.reachable is not None:
                self.metrics.set_reachable(name, worker.reachable)
            self.metrics.report_api_totals(name, worker.request_totals())
            self.metrics.report_api_error_totals(name, worker.error_totals())
            drift = worker.drift
            for sync in worker.cluster.syncs:
                self.metrics.set_drifted(name, sync.name, drift.drifted_count(sync.name) if drift else 0)
        self.metrics.set_rollout(self.rollout.position(self._failing))

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop`; returns within :data:`SHUTDOWN_TIMEOUT` after it."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._roots = [
                    tg.create_task(self._source_loop(), name="source"),
                    tg.create_task(self._reload_loop(), name="reload"),
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
                for name in self.workers:
                    self._start_worker(name)
                self.started.set()
                await self._stop.wait()
                raise _Stopping  # noqa: TRY301 - cancels every root task of the group at once
        except* _Stopping:
            log.info("fleetd stopped")

    def _start_worker(self, name: str) -> None:
        assert self._tg is not None
        self._tasks[name] = self._tg.create_task(self.workers[name].run(), name=f"cluster/{name}")

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

    # -- live reload ---------------------------------------------------------------

    async def _reload_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELOAD_POLL):
                    await self._reload_now.wait()
            if self._reload_now.is_set() or inventory_stamp(self.fleet) != self._stamp:
                self._reload_now.clear()
                await self.reload()

    async def reload(self) -> bool:
        """Swap in the inventory on disk; keep the current one (and say why) if it is invalid."""
        self.notifier.reloading("reloading the inventory")
        try:
            return await self._reload()
        finally:
            self.notifier.ready_after_reload(self.describe())

    async def _reload(self) -> bool:
        self._stamp = inventory_stamp(self.fleet)
        try:
            new = await asyncio.to_thread(load_fleet, self.fleet.file)
        except InventoryError as exc:
            self.reload_error = str(exc)
            self.metrics.set_inventory_valid(False)
            log.error("inventory not reloaded, keeping the last good one:\n%s", exc)  # noqa: TRY400
            self.reloaded.set()
            return False
        self.reload_error = None
        self.metrics.set_inventory_valid(True)
        await self._apply_inventory(new)
        self._stamp = inventory_stamp(new)
        self.reloaded.set()
        return True

    async def _prune_departed(self, worker: ClusterWorker) -> None:
        name = worker.cluster.name
        try:
            async with asyncio.timeout(
                max(s.timeout for s in worker.cluster.syncs) if worker.cluster.syncs else 60
            ):
                syncs = await worker.prune_everything()
        except (FleetdError, TimeoutError) as exc:
            log.error("cluster %s left the inventory but could not be pruned: %s", name, exc)  # noqa: TRY400
            return
        log.info("cluster %s left the inventory: pruned syncs %s", name, ", ".join(syncs) or "none")

    async def _apply_inventory(self, new: Fleet) -> None:
        old, self.fleet = self.fleet, new
        if (new.state_dir, new.listen_host, new.listen_port, new.name) != (
            old.state_dir, old.listen_host, old.listen_port, old.name,
        ):  # fmt: skip
            log.warning("fleet name, state_dir and listen changes take effect after a restart")
        if new.source != old.source:
            self.source = GitSourceFetcher(new.source, old.state_dir)
            self._fetch_now.set()
        if new.decryption != old.decryption:
            self.decrypt = decryptor(new.decryption)
            self.renders.clear()
        before = {c.name: c for c in old.clusters}
        after = {c.name: c for c in new.clusters}
        for name in before.keys() - after.keys():  # removed: stop; its objects stay unless asked otherwise
            await self._stop_worker(name)
            worker = self.workers.pop(name)
            self.metrics.forget_cluster(name)
            if new.prune_removed_clusters:
                await self._prune_departed(worker)
        changed = [
            n for n in after if n not in before or after[n] != before[n] or new.decryption != old.decryption
        ]
        for name in changed:  # new or different: a fresh worker, reconciling everything at once
            await self._stop_worker(name)
            self.workers[name] = self._worker(name)
            self.workers[name].trigger()
            self._start_worker(name)
        self.rollout = Rollout((c.wave for c in new.clusters), self.state)
        self._advance()
        log.info(
            "inventory reloaded: %d cluster(s); added %s, removed %s, changed %s",
            len(after), sorted(after.keys() - before.keys()) or "none",
            sorted(before.keys() - after.keys()) or "none", sorted(set(changed) & before.keys()) or "none",
        )  # fmt: skip

    async def _http(self) -> None:
        """The HTTP server; if it cannot start, say why and keep reconciling without it."""
        hooks = self.fleet.webhooks
        try:
            await web.serve(
                self, self.metrics, host=self.fleet.listen_host, port=self.fleet.listen_port,
                github_secret=hooks.github_secret_file, generic_secret=hooks.generic_secret_file,
                ready=self.http_ready,
            )  # fmt: skip
        except FleetdError as exc:
            log.error("HTTP server not started: %s; reconciling continues without it", exc)  # noqa: TRY400

    async def _source_loop(self) -> None:
        while True:
            self._fetch_now.clear()
            started = time.monotonic()
            try:
                before = self.source.current
                snapshot = await self.source.fetch()
                self.metrics.observe_fetch("ok", time.monotonic() - started)
                if before is None or snapshot.revision != before.revision:
                    await self._new_revision(snapshot)
            except SourceError as exc:
                self.metrics.observe_fetch("failed", time.monotonic() - started)
                log.warning(
                    "source: %s; keeping %s; retrying in %.1fs",
                    exc, _rev(self.source.current), self.source.next_attempt_in,
                )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.source.next_attempt_in):
                    await self._fetch_now.wait()

    async def _new_revision(self, snapshot: Snapshot) -> None:
        log.info("source: new revision %s (%s): %s", snapshot.revision[:12], snapshot.ref, snapshot.message)
        self.metrics.set_source_revision(self.fleet.source.url, snapshot.ref, snapshot.revision)
        self._snapshots[snapshot.revision] = snapshot
        await self._restore_wave_snapshots()
        self.renders.evict_except(snapshot.revision)
        self._advance()
        for worker in self.workers.values():  # a wave may already be at this revision (restart)
            worker.wake()

    async def _restore_wave_snapshots(self) -> None:
        """After a restart, materialise the older revisions held-back waves still apply."""
        for wave, revision in list(self.rollout.allowed.items()):
            if revision in self._snapshots:
                continue
            try:
                self._snapshots[revision] = await self.source.snapshot_at(revision)
            except SourceError as exc:
                log.warning(
                    "rollout: wave %d's revision %s is gone (%s); it waits for the next",
                    wave,
                    revision[:12],
                    exc,
                )
                del self.rollout.allowed[wave]


def decryptor(decryption: Decryption) -> Decrypt | None:
    """The renderer's decryption hook for the fleet's keys, or None when none are configured.

    Unusable keys (unreadable file, bad key) do not stop the daemon: the hook
    then fails every encrypted file with that error, so only the syncs that
    hold secrets fail, and they say why.
    """
    if not decryption.age_key_files and decryption.gnupg_home is None:
        return None
    try:
        keys = KeyRing.from_decryption(decryption)
    except SopsError as exc:
        log.error("decryption keys unusable: %s", exc)  # noqa: TRY400 - the message is the diagnosis
        failure = exc

        def broken(data: bytes, fmt: str) -> bytes:
            raise failure

        return broken
    return lambda data, fmt: decrypt_bytes(data, fmt, keys)


# -- what the HTTP server shows (web.FleetView) ----------------------------------------


def inventory_stamp(fleet: Fleet) -> tuple[tuple[str, int, int], ...]:
    """What the inventory files look like on disk (path, mtime, size): a change means reload."""
    files = [fleet.file, *fleet.clusters_dir.glob("*.toml")]
    stamp = []
    for path in sorted(set(files)):
        with contextlib.suppress(OSError):
            st = path.stat()
            stamp.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(stamp)


class _Stopping(Exception):
    """Raised inside the task group to cancel every root task."""


def _rev(snapshot: Snapshot | None) -> str:
    return snapshot.revision[:12] if snapshot else "no revision yet"


async def serve(config: Path) -> int:
    """Entry point of ``fleetd run``: load, run until a signal, stop within the bound."""
    try:
        daemon = Daemon.from_config(config)
    except InventoryError as exc:
        log.error("the inventory is invalid:\n%s", exc)  # noqa: TRY400 - the problems are the message; no traceback
        return 2
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

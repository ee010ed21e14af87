"""``fleetd run``: the long-running daemon and its named root tasks.

Root tasks, all in one :class:`asyncio.TaskGroup`:

* ``source`` — fetches the repository once per interval (or when
  triggered) for the whole fleet; a new revision wakes every worker;
* ``cluster/<name>`` — one :class:`~fleetd.worker.ClusterWorker` per cluster.

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
from pathlib import Path

from fleetd.errors import InventoryError
from fleetd.inventory import Decryption, Fleet, load_fleet
from fleetd.render import Decrypt, RenderCache
from fleetd.sops import KeyRing, SopsError, decrypt_bytes
from fleetd.source import GitSourceFetcher, Snapshot, SourceError, redact
from fleetd.state import StateStore
from fleetd.worker import ClusterWorker

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0


class Daemon:
    """One fleet, reconciled continuously until :meth:`stop`."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.state = StateStore(fleet.state_dir)
        self.source = GitSourceFetcher(fleet.source, fleet.state_dir)
        self.renders = RenderCache()
        self.decrypt = decryptor(fleet.decryption)
        self._limiter = asyncio.Semaphore(fleet.concurrency)
        self.workers = {c.name: self._worker(c.name) for c in fleet.clusters}
        self._fetch_now = asyncio.Event()
        self._stop = asyncio.Event()
        self.started = asyncio.Event()

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
            snapshot=lambda: self.source.current,
            decrypt=self.decrypt,
        )

    # -- control ---------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def stopping(self) -> None:
        """Return once a stop was asked for."""
        await self._stop.wait()

    def trigger_fetch(self) -> None:
        """Fetch the repository now (webhooks call this)."""
        self._fetch_now.set()

    def trigger(self, cluster: str | None = None, sync: str | None = None) -> None:
        """Reconcile now: one sync, one cluster, or the whole fleet."""
        targets = [self.workers[cluster]] if cluster else list(self.workers.values())
        for worker in targets:
            worker.trigger(sync)

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop`; returns within :data:`SHUTDOWN_TIMEOUT` after it."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._source_loop(), name="source")
                for name, worker in self.workers.items():
                    tg.create_task(worker.run(), name=f"cluster/{name}")
                self.started.set()
                await self._stop.wait()
                raise _Stopping  # noqa: TRY301 - cancels every root task of the group at once
        except* _Stopping:
            log.info("fleetd stopped")

    async def _source_loop(self) -> None:
        while True:
            self._fetch_now.clear()
            try:
                before = self.source.current
                snapshot = await self.source.fetch()
                if before is None or snapshot.revision != before.revision:
                    self._new_revision(snapshot)
            except SourceError as exc:
                log.warning(
                    "source: %s; keeping %s; retrying in %.1fs",
                    exc, _rev(self.source.current), self.source.next_attempt_in,
                )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.source.next_attempt_in):
                    await self._fetch_now.wait()

    def _new_revision(self, snapshot: Snapshot) -> None:
        log.info("source: new revision %s (%s): %s", snapshot.revision[:12], snapshot.ref, snapshot.message)
        self.renders.evict_except(snapshot.revision)
        for worker in self.workers.values():
            worker.wake()


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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
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

"""The source loop: fetch once per revision for the whole fleet, and keep the snapshots waves need.

`Revisions` owns the `GitSourceFetcher`. Its `run` task fetches on the
source's interval or when triggered (webhooks, ``fleetd reconcile``), and
reports every attempt to the fleet state. A new revision is offered to the
rollout; the snapshots still applied by held-back waves stay materialised
(and pinned in the mirror), older ones are dropped.

A failed fetch keeps the last good revision and backs off (the fetcher's
own schedule); nothing downstream sees a half-fetched tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from fleetd.daemon.state import FleetState
from fleetd.inventory import GitSource
from fleetd.source import GitSourceFetcher, Snapshot, SourceError
from fleetd.util.backoff import backoff

log = logging.getLogger(__name__)

#: Seconds before upkeep is tried again after it failed.
UPKEEP_RETRY = 600.0


class Revisions:
    """The fleet's view of its git source; see the module docstring."""

    def __init__(
        self, config: GitSource, state_dir: Path, *, state: FleetState, on_new: Callable[[Snapshot], None]
    ) -> None:
        self.fetcher = GitSourceFetcher(config, state_dir)
        self._state, self._on_new = state, on_new
        self._snapshots: dict[str, Snapshot] = {}
        self._now = asyncio.Event()
        self._faults = 0

    @property
    def current(self) -> Snapshot | None:
        return self.fetcher.current

    def replace(self, config: GitSource, state_dir: Path) -> None:
        """The source changed in the inventory: fetch the new one now."""
        self.fetcher = GitSourceFetcher(config, state_dir)
        self._snapshots.clear()
        self.trigger()

    def trigger(self) -> None:
        """Fetch now (webhooks, operators)."""
        self._now.set()

    def snapshot(self, revision: str | None) -> Snapshot | None:
        return self._snapshots.get(revision) if revision else None

    def keep_only(self, revisions: set[str]) -> None:
        """Drop snapshots no wave applies any more, and let the mirror forget them."""
        self._snapshots = {r: s for r, s in self._snapshots.items() if r in revisions}
        self.fetcher.pin(revisions)

    async def run(self) -> None:
        while True:
            self._now.clear()
            started = time.monotonic()
            try:
                before = self.fetcher.current
                snapshot = await self.fetcher.fetch()
            except Exception as exc:  # the source's fault boundary: the last good revision stays
                error = str(exc)
                if not isinstance(exc, SourceError):
                    log.exception("source: internal error while fetching")
                    self._faults += 1
                    error = f"internal error while fetching: {type(exc).__name__}: {exc}"
                self._state.fetch_failed(time.monotonic() - started, error)
                log.warning(
                    "source: %s; keeping %s; retrying in %.1fs",
                    error, _rev(self.fetcher.current), self.fetcher.next_attempt_in,
                )  # fmt: skip
            else:
                self._faults = 0
                self._state.source.disk = self.fetcher.disk_usage
                new = before is None or snapshot.revision != before.revision
                self._state.fetched(
                    time.monotonic() - started, revision=snapshot.revision, ref=snapshot.ref,
                    message=snapshot.message,
                )  # fmt: skip
                if new:
                    log.info(
                        "source: new revision %s (%s): %s",
                        snapshot.revision[:12],
                        snapshot.ref,
                        snapshot.message,
                    )
                    self._snapshots[snapshot.revision] = snapshot
                    await self.restore(self._state.rollout.allowed)
                    self._on_new(snapshot)
            delay = max(self.fetcher.next_attempt_in, backoff(self._faults) if self._faults else 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._now.wait()

    async def upkeep(self) -> None:
        """Repack the mirror and drop snapshots nothing needs, on the source's schedule."""
        while True:
            await asyncio.sleep(self.fetcher.upkeep_due_in)
            try:
                report = await self.fetcher.upkeep()
            except Exception:
                log.exception("source: upkeep failed; trying again at the next round")
                await asyncio.sleep(UPKEEP_RETRY)
                continue
            self._state.source.disk = self.fetcher.disk_usage
            if report is not None:
                log.info(
                    "source: upkeep packed %d objects, removed %d snapshot(s), %d -> %d bytes in %.1fs",
                    report.packed_objects, len(report.removed_snapshots), report.before.total_bytes,
                    report.after.total_bytes, report.seconds,
                )  # fmt: skip

    async def restore(self, allowed: dict[int, str]) -> None:
        """After a restart, materialise the older revisions held-back waves still apply."""
        for wave, revision in list(allowed.items()):
            if revision in self._snapshots:
                continue
            try:
                self._snapshots[revision] = await self.fetcher.snapshot_at(revision)
            except SourceError as exc:
                log.warning("rollout: wave %d's revision %s is gone (%s); it waits for the next",
                            wave, revision[:12], exc)  # fmt: skip
                self._state.forget_wave_revision(wave)


def _rev(snapshot: Snapshot | None) -> str:
    return snapshot.revision[:12] if snapshot else "no revision yet"

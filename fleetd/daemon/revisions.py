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
from fleetd.source.git import GitSourceFetcher, Snapshot, SourceError

log = logging.getLogger(__name__)


class Revisions:
    """The fleet's view of its git source; see the module docstring."""

    def __init__(
        self, config: GitSource, state_dir: Path, *, state: FleetState, on_new: Callable[[Snapshot], None]
    ) -> None:
        self.fetcher = GitSourceFetcher(config, state_dir)
        self._state, self._on_new = state, on_new
        self._snapshots: dict[str, Snapshot] = {}
        self._now = asyncio.Event()

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
            except SourceError as exc:
                self._state.fetch_failed(time.monotonic() - started, str(exc))
                log.warning(
                    "source: %s; keeping %s; retrying in %.1fs",
                    exc, _rev(self.fetcher.current), self.fetcher.next_attempt_in,
                )  # fmt: skip
            else:
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
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.fetcher.next_attempt_in):
                    await self._now.wait()

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

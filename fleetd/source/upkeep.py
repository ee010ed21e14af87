"""Repository upkeep: repack the mirror, remove snapshots nobody needs, measure the disk.

A mirror that is fetched every minute for months collects loose objects,
many small packs and, after force pushes, objects no ref reaches; the
snapshots directory collects revisions. `run_upkeep` (blocking; the fetcher calls
it in a thread, under the git lock, via ``GitSourceFetcher.upkeep``) does
one round:

1. repack: every object reachable from the mirror's refs and from the
   revisions still in use goes into one new pack; older packs, loose and
   unreachable objects are deleted (`fleetd.source.libgit.Mirror.repack`);
2. prune: snapshots other than the ones in use (current, previous, pinned
   by rollout waves) and temporary directories left by a crash are removed;
3. measure: `DiskUsage` before and after, for the metrics.

The daemon schedules it: ``GitSourceFetcher.upkeep_due_in`` seconds after
the last round (``[source] upkeep_interval``, default 24h, first round one
interval after start), never while a fetch runs.
"""

from __future__ import annotations

import time
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

from fleetd.source.libgit import Mirror
from fleetd.source.snapshots import SnapshotStore, disk_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskUsage:
    """What the source takes on disk under the state directory."""

    mirror_bytes: int
    """The bare mirror (``git/mirror.git``)."""
    snapshot_bytes: int
    """Every snapshot directory together (``snapshots/``)."""
    snapshots: int
    """How many snapshots there are."""

    @property
    def total_bytes(self) -> int:
        return self.mirror_bytes + self.snapshot_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UpkeepReport:
    """What one round of upkeep did."""

    packed_objects: int
    """Objects in the mirror's new pack (0: no mirror yet, nothing packed)."""
    removed_snapshots: tuple[str, ...]
    """Revisions whose snapshot was deleted."""
    before: DiskUsage
    after: DiskUsage
    seconds: float


def measure(mirror_dir: Path, store: SnapshotStore) -> DiskUsage:
    """The source's disk use now (walks the directories: a few ms for a typical fleet repository)."""
    return DiskUsage(
        mirror_bytes=disk_bytes(mirror_dir),
        snapshot_bytes=disk_bytes(store.root),
        snapshots=len(store.revisions()),
    )


def run_upkeep(mirror_dir: Path, store: SnapshotStore, keep: Set[str], *, prune: bool) -> UpkeepReport:
    """One round of upkeep; `keep` are the revisions in use. Hold the git lock while calling."""
    started = time.monotonic()
    before = measure(mirror_dir, store)
    packed = 0
    if (mirror_dir / "HEAD").is_file():
        packed = Mirror.open(mirror_dir, clear_locks=False).repack(keep)
    removed = tuple(store.prune(keep)) if prune else ()
    return UpkeepReport(
        packed_objects=packed,
        removed_snapshots=removed,
        before=before,
        after=measure(mirror_dir, store),
        seconds=time.monotonic() - started,
    )

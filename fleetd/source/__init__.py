"""The source stage: fetch the fleet repository once per revision, serve it as read-only snapshots.

The public API, for the daemon, the CLI and the reconcilers:

* `GitSourceFetcher` (``fetcher``): fetch, keep the last good snapshot, back
  off, pin revisions, upkeep;
* `Snapshot` (``snapshots``) and `remove_tree`;
* the errors (``errors``): `SourceError` > `FetchError`, `AuthError` >
  `TrustError`, `RefNotFound`;
* `follows` (``refs``): can a push to this ref change what the source deploys?
* `DiskUsage`, `UpkeepReport` (``upkeep``); `redact` (``urls``);
  `publish_directory` (``libgit``, for the demo).

Inside, one job per module: ``urls`` (transports, hosts, redaction),
``known_hosts`` (SSH host trust), ``credentials`` (keys and tokens from
files), ``github_app`` (App installation tokens; aiohttp's client enters
here), ``refs`` (ref resolution), ``libgit`` (pygit2 enters here, and only
here), ``snapshots`` (read-only trees on disk), ``upkeep`` (repack, prune,
disk use), ``fetcher`` (the attempt, its thread, timeouts and back-off).
"""

from __future__ import annotations

from fleetd.source.errors import AuthError, FetchError, RefNotFound, SourceError, TrustError
from fleetd.source.fetcher import GitSourceFetcher
from fleetd.source.libgit import publish_directory
from fleetd.source.refs import follows
from fleetd.source.snapshots import Snapshot, remove_tree
from fleetd.source.upkeep import DiskUsage, UpkeepReport
from fleetd.source.urls import redact

__all__ = [
    "AuthError",
    "DiskUsage",
    "FetchError",
    "GitSourceFetcher",
    "RefNotFound",
    "Snapshot",
    "SourceError",
    "TrustError",
    "UpkeepReport",
    "follows",
    "publish_directory",
    "redact",
    "remove_tree",
]

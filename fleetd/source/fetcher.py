"""The git source's fetcher: fetch the fleet repository once per revision, serve it as snapshots.

The whole fleet reads one repository, so fleetd fetches it once (not once per
cluster) and hands every cluster the same immutable `Snapshot`.

API: ``GitSourceFetcher(config, state_dir)``; ``await fetch()`` returns the
current `Snapshot` (the same object while the revision is unchanged, and it
already cleans up after a change); ``current``, ``last_error``, ``failures``
and ``next_attempt_in`` are for the daemon's loop and the status API;
``pin()`` keeps the revisions rollout waves still apply; ``await upkeep()``
repacks and prunes when ``upkeep_due_in`` reaches 0; ``disk_usage`` is the
last measurement, for metrics.

Layout under the state directory (directories ``0700``, whatever the umask)::

    git/mirror.git/            bare repository, re-used across fetches and restarts
    git/home/.ssh/known_hosts  the trusted keys of the one SSH host (0600)
    snapshots/<commit-sha>/    the tree of that commit, read-only, never changed

One attempt: get the credential (read the key or token file, or an App
token from the GitHub API, cached), list the remote's refs, resolve the ref
(branch, tag, highest tag in a semver range, pinned commit), download only
when the mirror lacks the commit (a pinned commit already present needs no
network at all; ``depth`` makes the download shallow), then materialise the
snapshot if it is new.

Why a thread: pygit2 blocks, so an attempt runs in `asyncio.to_thread` under
`asyncio.timeout(GitSource.timeout)`. A thread cannot be killed, so a
timed-out attempt is abandoned, not stopped; three things keep it harmless:
its callbacks raise once it is abandoned; libgit2's socket timeouts (set to
the same value) end a read that hangs; and every git operation holds one
process-wide lock (`libgit.exclusive`), which the next attempt waits for at
most `timeout` seconds before failing with a `FetchError`.

On failure the fetcher keeps `current` (the last good snapshot), keeps the
error in `last_error` (see `fleetd.source.errors` for the classes), and
backs off: `next_attempt_in` grows exponentially with jitter, capped.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from fleetd.inventory.model import GitSource, RefKind
from fleetd.source import credentials, libgit, refs
from fleetd.source.credentials import Credential, CredentialError, CredentialUnavailable
from fleetd.source.errors import AuthError, FetchError, RefNotFound, SourceError, TrustError
from fleetd.source.github_app import AppTokens
from fleetd.source.known_hosts import UntrustedHost, trusted_keys
from fleetd.source.snapshots import Snapshot, SnapshotStore, make_private_dir
from fleetd.source.upkeep import DiskUsage, UpkeepReport, measure, run_upkeep
from fleetd.source.urls import redact, ssh_host_port, transport
from fleetd.util.backoff import backoff

BACKOFF_INITIAL = 5.0
"""Seconds before the first retry after a failure."""
BACKOFF_MAX = 300.0
"""Longest wait between retries (5m)."""
UPKEEP_TIMEOUT = 600.0
"""Longest wait for the git lock before an upkeep round is skipped (s)."""


class GitSourceFetcher:
    """Keeps one repository fetched and its current revision materialised; see the module docstring."""

    def __init__(self, config: GitSource, state_dir: Path) -> None:
        self._config = config
        self._url = redact(config.url)
        self._git_dir = state_dir / "git"
        self._mirror_dir = self._git_dir / "mirror.git"
        self._home = self._git_dir / "home"
        self._store = SnapshotStore(state_dir / "snapshots")
        self._current: Snapshot | None = None
        self._previous: Snapshot | None = None
        self._last_error: SourceError | None = None
        self._failures = 0
        self._next_attempt_at = 0.0
        self._upkeep_at = time.monotonic() + config.upkeep_interval
        self._disk: DiskUsage | None = None
        self._lock = asyncio.Lock()
        self._stale_locks_cleared = False
        self._pinned: frozenset[str] = frozenset()
        auth = config.auth
        app = auth.github_app if auth is not None else None
        ca_file = auth.ca_file if auth is not None else None
        self._app = AppTokens(app, ca_file=ca_file, timeout=config.timeout) if app is not None else None

    def __repr__(self) -> str:
        return f"<GitSourceFetcher {self._url} ({self._config.ref})>"

    @property
    def config(self) -> GitSource:
        return self._config

    @property
    def current(self) -> Snapshot | None:
        """The last good snapshot; None until the first successful fetch."""
        return self._current

    @property
    def last_error(self) -> SourceError | None:
        """Why the last attempt failed; None after a success."""
        return self._last_error

    @property
    def failures(self) -> int:
        """Attempts failed in a row."""
        return self._failures

    @property
    def next_attempt_in(self) -> float:
        """Seconds until the next attempt is due: `interval` after a success, backoff after failures."""
        return max(0.0, self._next_attempt_at - time.monotonic())

    @property
    def upkeep_due_in(self) -> float:
        """Seconds until the next round of `upkeep` is due (monotonic clock)."""
        return max(0.0, self._upkeep_at - time.monotonic())

    @property
    def disk_usage(self) -> DiskUsage | None:
        """Disk use measured after the last new revision or upkeep round; None before either."""
        return self._disk

    async def fetch(self) -> Snapshot:
        """Fetch, resolve the ref, materialise a new revision; the same `Snapshot` object if unchanged.

        Raises SourceError; `current` then stays the last good snapshot.
        """
        async with self._lock:
            try:
                snapshot = await self._attempt()
            except SourceError as error:
                self._failed(error)
                raise
            return await self._succeeded(snapshot)

    def pin(self, revisions: Iterable[str]) -> None:
        """Keep the snapshots of ``revisions`` too (rollout waves still applying an older revision)."""
        self._pinned = frozenset(revisions)

    async def snapshot_at(self, revision: str) -> Snapshot:
        """The snapshot of a revision already in the mirror (e.g. a wave's revision after a restart)."""
        if self._current is not None and self._current.revision == revision:
            return self._current
        async with self._lock:
            return await asyncio.to_thread(self._materialise_known, revision)

    async def commit_info(self, revision: str) -> libgit.Commit | None:
        """Summary, author and time of a commit in the mirror (read-only); None if unknown or unreadable.

        Reads through a repository object of its own, so it needs no lock and
        never waits for a fetch in flight.
        """
        return await asyncio.to_thread(libgit.read_commit, self._mirror_dir, revision)

    def cleanup(self) -> None:
        """Delete snapshots other than the current, previous and pinned ones (blocking; skips when busy)."""
        if self._current is None:
            return  # never fetched: keep what a restart may re-use
        with libgit.exclusive(1.0) as held:
            if held:
                self._store.prune(self._in_use())

    async def upkeep(self) -> UpkeepReport | None:
        """Repack the mirror, prune unused snapshots and measure the disk; None if the lock stayed busy.

        Runs between fetches (it takes the fetcher's lock). The next round is
        due `GitSource.upkeep_interval` later, whatever happened.
        """
        async with self._lock:
            self._upkeep_at = time.monotonic() + self._config.upkeep_interval
            report = await asyncio.to_thread(self._upkeep_locked)
        if report is not None:
            self._disk = report.after
        return report

    # --- the event-loop side of an attempt --------------------------------------------------------

    async def _attempt(self) -> Snapshot:
        abandoned = threading.Event()
        try:
            async with asyncio.timeout(self._config.timeout):
                credential = await self._credential()
                return await asyncio.to_thread(self._run_locked, abandoned, credential)
        except TimeoutError:
            raise self._error(
                FetchError,
                f"no answer within {self._config.timeout:g}s; check that the server is reachable "
                "from this host, or raise the source timeout for a large repository",
            ) from None
        except AuthError:
            if self._app is not None:
                self._app.invalidate()  # a refused installation token is not used again
            raise
        finally:
            abandoned.set()

    async def _credential(self) -> Credential | None:
        try:
            if self._app is not None:
                return await self._app.token()
            return credentials.read_static(self._config.auth)
        except CredentialError as error:
            raise self._error(TrustError if error.trust else AuthError, str(error)) from None
        except CredentialUnavailable as error:
            raise self._error(FetchError, str(error)) from None

    def _failed(self, error: SourceError) -> None:
        self._last_error = error
        self._failures += 1
        self._next_attempt_at = time.monotonic() + backoff(
            self._failures, base=BACKOFF_INITIAL, cap=BACKOFF_MAX
        )

    async def _succeeded(self, snapshot: Snapshot) -> Snapshot:
        self._last_error = None
        self._failures = 0
        self._next_attempt_at = time.monotonic() + self._config.interval
        current = self._current
        if current is not None and (current.revision, current.ref) == (snapshot.revision, snapshot.ref):
            return current
        if current is None or current.revision != snapshot.revision:
            self._previous = current
        self._current = snapshot
        await asyncio.to_thread(self._cleanup_and_measure)
        return snapshot

    def _in_use(self) -> set[str]:
        return {s.revision for s in (self._current, self._previous) if s is not None} | self._pinned

    def _cleanup_and_measure(self) -> None:
        self.cleanup()
        self._disk = measure(self._mirror_dir, self._store)

    # --- everything below runs in the worker thread ------------------------------------------------

    def _upkeep_locked(self) -> UpkeepReport | None:
        with libgit.exclusive(UPKEEP_TIMEOUT) as held:
            if not held:
                return None
            return run_upkeep(self._mirror_dir, self._store, self._in_use(), prune=self._current is not None)

    def _materialise_known(self, revision: str) -> Snapshot:
        with libgit.exclusive(self._config.timeout) as held:
            if not held:
                raise self._error(FetchError, "an earlier fetch is still running; fleetd retries later")
            mirror = self._open_mirror()
            commit = mirror.commit(revision)
            if commit is None:
                raise self._error(RefNotFound, f"revision {revision[:12]} is not in the mirror")
            root = self._store.materialise(commit.id, mirror.entries(commit.id))
        return Snapshot(revision=commit.id, ref=f"commit {revision[:12]}", root=root, message=commit.summary)

    def _run_locked(self, abandoned: threading.Event, credential: Credential | None) -> Snapshot:
        with libgit.exclusive(self._config.timeout) as held:
            if not held:
                raise self._error(FetchError, "an earlier fetch is still running; fleetd retries later")
            try:
                return self._run(abandoned, credential)
            except libgit.Abandoned:
                raise self._error(FetchError, "abandoned after the timeout") from None
            except OSError as error:
                raise self._error(
                    FetchError,
                    f"cannot write under {self._git_dir.parent}: {error.strerror or error}; check the "
                    "state directory's owner, permissions and free space",
                ) from error
            except ValueError as error:
                raise self._error(FetchError, f"cannot store the revision: {error}") from error

    def _run(self, abandoned: threading.Event, credential: Credential | None) -> Snapshot:
        if abandoned.is_set():
            raise libgit.Abandoned
        session = self._session(abandoned, credential)
        mirror = self._open_mirror()
        ref = self._config.ref
        try:
            if ref.kind is RefKind.COMMIT:
                target = refs.pinned(ref)
            else:
                target = refs.resolve(ref, mirror.remote_refs(session))
        except refs.Unresolved as error:
            raise self._error(RefNotFound, str(error)) from None
        commit = mirror.commit(target.oid)
        if commit is None:
            refspecs = [f"+{target.refname}:{target.refname}"] if target.refname else libgit.ALL_REFS
            mirror.download(session, refspecs, self._config.depth)
            commit = mirror.commit(target.oid)
        if commit is None:
            raise self._error(
                RefNotFound, "the commit is on no branch or tag of the remote; check the hash, or push it"
            )
        if abandoned.is_set():
            raise libgit.Abandoned
        root = self._store.materialise(commit.id, mirror.entries(commit.id))
        return Snapshot(revision=commit.id, ref=target.label, root=root, message=commit.summary)

    def _session(self, abandoned: threading.Event, credential: Credential | None) -> libgit.Session:
        auth = self._config.auth
        ssh = transport(self._config.url) == "ssh"
        if ssh:
            self._write_known_hosts()
        ca_file = auth.ca_file if auth is not None else None
        if ca_file is not None and not ca_file.is_file():
            raise self._error(TrustError, f"ca_file {ca_file} does not exist; set it to a PEM CA bundle")
        libgit.configure(timeout=self._config.timeout, home=self._home if ssh else None, ca_file=ca_file)
        return libgit.Session(
            url=self._config.url,
            credential=credential,
            error=self._error,
            abandoned=abandoned,
            known_hosts_file=auth.known_hosts_file if auth is not None else None,
            ca_file=ca_file,
        )

    def _write_known_hosts(self) -> None:
        auth = self._config.auth
        if auth is None or auth.known_hosts_file is None:
            raise self._error(TrustError, "set auth.known_hosts_file (ssh-keyscan <host> > known_hosts)")
        host, port = ssh_host_port(self._config.url)
        try:
            lines = trusted_keys(auth.known_hosts_file, host, port)
        except UntrustedHost as error:
            raise self._error(TrustError, str(error)) from None
        ssh_dir = make_private_dir(self._home / ".ssh")
        fd = os.open(ssh_dir / "known_hosts", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(lines)

    def _open_mirror(self) -> libgit.Mirror:
        make_private_dir(self._git_dir)
        mirror = libgit.Mirror.open(self._mirror_dir, clear_locks=not self._stale_locks_cleared)
        self._stale_locks_cleared = True
        return mirror

    def _error(self, kind: type[SourceError], detail: str) -> SourceError:
        return kind(self._url, str(self._config.ref), detail)
